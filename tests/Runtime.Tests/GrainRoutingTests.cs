using System.Collections.Concurrent;
using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Transport;

namespace LongCluster.Runtime.Tests;

/// <summary>Grain calls across three silos in one process, over the real silo-to-silo transport.</summary>
public sealed class GrainRoutingTests : IAsyncLifetime
{
    private readonly ConcurrentBag<string> _log = [];
    private LocalCluster _cluster = null!;

    private IReadOnlyList<Silo> Silos => _cluster.Silos;

    public async Task InitializeAsync() => _cluster = await LocalCluster.StartAsync(
        3,
        new GrainTypeRegistry()
            .Add<ICounterGrain, CounterGrain>(() => new CounterGrain(_log), "counter")
            .Add<IShardGrain, ShardGrain>(() => new ShardGrain(), "shard")
            .Add<IHelperGrain, HelperGrain>(() => new HelperGrain(), "helper"),
        o => o.Timing = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(50), DeathTimeout = TimeSpan.FromSeconds(2) });

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task ConcurrentCallsThroughEverySilo_OneActivationNoLostUpdates()
    {
        int[] results = await Task.WhenAll(Enumerable.Range(0, 300).Select(i =>
            Task.Run(() => Silos[i % 3].GrainFactory.GetGrain<ICounterGrain>("shared").IncrementAsync(default))));
        Assert.Equal(Enumerable.Range(1, 300), results.Order());
        Assert.Single(_log, l => l == "activate shared");
        Assert.Equal(1, Silos.Sum(s => s.Grains.ActivationIds.Count(id => id.Key == "shared")));
    }

    [Fact]
    public async Task ManyGrains_ActivationsSpreadOverSilos_EachOnItsOwner()
    {
        for (int i = 0; i < 60; i++)
        {
            Assert.Equal($"counter/k{i}", await Silos[i % 3].GrainFactory.GetGrain<ICounterGrain>($"k{i}").WhoAmIAsync(default));
        }

        Assert.All(Silos, s => Assert.True(s.Grains.ActivationCount > 0, $"{s.Address} hosts nothing"));
        foreach (Silo silo in Silos)
        {
            Assert.All(silo.Grains.ActivationIds, id => Assert.Equal(silo.Address, silo.Router.OwnerOf(id)));
        }
    }

    [Fact]
    public async Task OneWayCallsToARemoteGrain_ArriveInOrderBeforeTheNextCall()
    {
        Silo caller = Silos.First(s => s.Router.OwnerOf(new GrainId("counter", "notes")) != s.Address);
        ICounterGrain grain = caller.GrainFactory.GetGrain<ICounterGrain>("notes");
        for (int i = 0; i < 30; i++)
        {
            await grain.NoteAsync(i, default);
        }

        Assert.Equal(Enumerable.Range(0, 30), await grain.RecordedAsync(default));
    }

    [Fact]
    public async Task SpreadPlacement_SixShardsOverThreeSilos_TwoEachAndStable()
    {
        string[] where = new string[6];
        for (int i = 0; i < 6; i++)
        {
            where[i] = await Silos[i % 3].GrainFactory.GetGrain<IShardGrain>($"seq-7/{i}/6").WhereAsync(default);
        }

        Assert.All(Silos, s => Assert.Equal(2, where.Count(w => w == s.Address.ToString())));
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(where[i], await Silos[(i + 1) % 3].GrainFactory.GetGrain<IShardGrain>($"seq-7/{i}/6").WhereAsync(default));
        }

        ArgumentException error = await Assert.ThrowsAsync<ArgumentException>(() => Silos[0].GrainFactory.GetGrain<IShardGrain>("seq-7/9").WhereAsync(default));
        Assert.Contains("group/index/count", error.Message);
    }

    [Fact]
    public async Task LocalPlacement_EachCallerSiloGetsItsOwnHelper()
    {
        foreach (Silo silo in Silos)
        {
            Assert.Equal(silo.Address.ToString(), await silo.GrainFactory.GetGrain<IHelperGrain>("packer").WhereAsync(default));
        }
    }

    [Fact]
    public async Task RemoteGrainThrows_CallerGetsItsMessage()
    {
        Silo caller = Silos.First(s => s.Router.OwnerOf(new GrainId("counter", "thrower")) != s.Address);
        RemoteException error = await Assert.ThrowsAsync<RemoteException>(() => caller.GrainFactory.GetGrain<ICounterGrain>("thrower").FailAsync("bad shape [3, 4]", default));
        Assert.Contains("bad shape [3, 4]", error.Message);
    }

    [Fact]
    public async Task RemoteGrainBlocks_CallerGetsTypedTimeoutFromTheOwnersDeadline()
    {
        await using LocalCluster cluster = await LocalCluster.StartAsync(
            2,
            new GrainTypeRegistry().Add<ICounterGrain, CounterGrain>(() => new CounterGrain(_log), "counter"),
            o => o.Grains = new GrainRuntimeOptions { DefaultCallTimeout = TimeSpan.FromMilliseconds(300) });
        Silo caller = cluster.Silos.First(s => s.Router.OwnerOf(new GrainId("counter", "stuck")) != s.Address);
        GrainCallTimeoutException error = await Assert.ThrowsAsync<GrainCallTimeoutException>(() => caller.GrainFactory.GetGrain<ICounterGrain>("stuck").BlockAsync(default));
        Assert.Equal("BlockAsync", error.Method);
        Assert.Equal("call counter/stuck.BlockAsync did not complete within 0.3 s", error.Message);
    }

    [Fact]
    public async Task OwnerCrashes_DeclaredDeadThenGrainAnswersFromAnotherSilo()
    {
        var id = new GrainId("counter", "orphan");
        Silo owner = Silos.Single(s => s.Address == s.Router.OwnerOf(id));
        Silo caller = Silos.First(s => s != owner);
        Assert.Equal(1, await caller.GrainFactory.GetGrain<ICounterGrain>("orphan").IncrementAsync(default));

        // No leave: heartbeats and the listener just stop, as when the process is killed.
        await _cluster.CrashAsync(Silos.ToList().IndexOf(owner));
        await caller.Membership.WaitForViewAsync(v => v.StatusOf(owner.Address) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(1, await caller.GrainFactory.GetGrain<ICounterGrain>("orphan").IncrementAsync(default));
        Assert.NotEqual(owner.Address, caller.Router.OwnerOf(id));
    }

    [Fact]
    public async Task OwnerLeaves_GrainAnswersFromItsNewOwner()
    {
        var id = new GrainId("counter", "moving");
        Silo owner = Silos.Single(s => s.Address == s.Router.OwnerOf(id));
        Silo caller = Silos.First(s => s != owner);
        Assert.Equal(1, await caller.GrainFactory.GetGrain<ICounterGrain>("moving").IncrementAsync(default));

        await owner.StopAsync(default);
        await caller.Membership.WaitForViewAsync(v => v.StatusOf(owner.Address) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(20));

        // State lived only on the stopped silo: the new activation starts from scratch, elsewhere.
        Assert.Equal(1, await caller.GrainFactory.GetGrain<ICounterGrain>("moving").IncrementAsync(default));
        Assert.NotEqual(owner.Address, caller.Router.OwnerOf(id));
    }
}

[SpreadPlacement]
public interface IShardGrain : IGrainWithStringKey
{
    Task<string> WhereAsync(CancellationToken cancellationToken);
}

[LocalPlacement]
public interface IHelperGrain : IGrainWithStringKey
{
    Task<string> WhereAsync(CancellationToken cancellationToken);
}

public sealed class ShardGrain : Grain, IShardGrain
{
    public Task<string> WhereAsync(CancellationToken cancellationToken) => Task.FromResult(Silo!.ToString());
}

public sealed class HelperGrain : Grain, IHelperGrain
{
    public Task<string> WhereAsync(CancellationToken cancellationToken) => Task.FromResult(Silo!.ToString());
}
