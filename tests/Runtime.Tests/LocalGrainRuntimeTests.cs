using System.Collections.Concurrent;

namespace LongCluster.Runtime.Tests;

public interface ICounterGrain : IGrainWithStringKey
{
    Task<int> IncrementAsync(CancellationToken cancellationToken);

    Task<string> WhoAmIAsync(CancellationToken cancellationToken);

    Task RecordAsync(int value, TimeSpan hold, CancellationToken cancellationToken);

    ValueTask<int[]> RecordedAsync(CancellationToken cancellationToken);

    Task BlockAsync(CancellationToken cancellationToken);

    Task HangIgnoringCancellationAsync(TaskCompletionSource release, CancellationToken cancellationToken);

    [Reentrant]
    Task<int> PeekAsync(CancellationToken cancellationToken);

    Task FailAsync(string message, CancellationToken cancellationToken);

    Task ByeAsync(CancellationToken cancellationToken);

    [OneWay]
    Task NoteAsync(int value, CancellationToken cancellationToken);
}

public sealed class CounterGrain(ConcurrentBag<string> log) : Grain, ICounterGrain
{
    private readonly List<int> _recorded = [];
    private int _count;
    private int _inside;

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        log.Add($"activate {GrainId.Key}");
        return Task.CompletedTask;
    }

    /// <summary>Grains keyed "keep…" still hold wanted state when idle.</summary>
    protected internal override Task<bool> KeepWhenIdleAsync(CancellationToken cancellationToken) => Task.FromResult(GrainId.Key.StartsWith("keep", StringComparison.Ordinal));

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        log.Add($"deactivate {GrainId.Key} {reason}");
        return Task.CompletedTask;
    }

    public async Task<int> IncrementAsync(CancellationToken cancellationToken)
    {
        int before = _count;
        await Task.Yield();
        _count = before + 1;
        return _count;
    }

    public Task<string> WhoAmIAsync(CancellationToken cancellationToken) => Task.FromResult(GrainId.ToString());

    public async Task RecordAsync(int value, TimeSpan hold, CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _inside) != 1)
        {
            throw new InvalidOperationException("two turns overlapped");
        }

        _recorded.Add(value);
        await Task.Delay(hold, cancellationToken);
        Interlocked.Decrement(ref _inside);
    }

    public ValueTask<int[]> RecordedAsync(CancellationToken cancellationToken) => ValueTask.FromResult(_recorded.ToArray());

    public Task BlockAsync(CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);

    public Task HangIgnoringCancellationAsync(TaskCompletionSource release, CancellationToken cancellationToken) => release.Task;

    public Task<int> PeekAsync(CancellationToken cancellationToken) => Task.FromResult(_recorded.Count);

    public Task FailAsync(string message, CancellationToken cancellationToken) => throw new ArgumentException(message);

    public async Task NoteAsync(int value, CancellationToken cancellationToken)
    {
        await Task.Yield();
        _recorded.Add(value);
    }

    public Task ByeAsync(CancellationToken cancellationToken)
    {
        DeactivateOnIdle();
        return Task.CompletedTask;
    }
}

public sealed class LocalGrainRuntimeTests
{
    private readonly ConcurrentBag<string> _log = [];
    private readonly ManualClock _clock = new();

    private LocalGrainRuntime CreateRuntime(TimeSpan? callTimeout = null) => new(
        new GrainTypeRegistry().Add<ICounterGrain, CounterGrain>(() => new CounterGrain(_log), "counter"),
        new GrainRuntimeOptions { DefaultCallTimeout = callTimeout ?? TimeSpan.FromSeconds(30), IdleTimeout = TimeSpan.FromMinutes(1) },
        _clock);

    [Fact]
    public async Task Calls_ConcurrentFromManyTasks_OneActivationAndNoLostUpdates()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        int[] results = await Task.WhenAll(Enumerable.Range(0, 200).Select(_ => Task.Run(() => runtime.GetGrain<ICounterGrain>("a").IncrementAsync(default))));
        Assert.Equal(Enumerable.Range(1, 200), results.Order());
        Assert.Equal(1, runtime.ActivationCount);
        Assert.Single(_log, l => l == "activate a");
        Assert.Equal("counter/a", await runtime.GetGrain<ICounterGrain>("a").WhoAmIAsync(default));
    }

    [Fact]
    public async Task Calls_OneAtATime_InArrivalOrder()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("order");
        Task[] calls = Enumerable.Range(0, 50).Select(i => grain.RecordAsync(i, TimeSpan.FromMilliseconds(i % 3), default)).ToArray();
        await Task.WhenAll(calls);
        Assert.Equal(Enumerable.Range(0, 50), await grain.RecordedAsync(default));
    }

    [Fact]
    public async Task Reentrant_RunsWhileATurnIsSuspended()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("r");
        var release = new TaskCompletionSource();
        Task hanging = grain.HangIgnoringCancellationAsync(release, default);
        Assert.Equal(0, await grain.PeekAsync(default).WaitAsync(TimeSpan.FromSeconds(10)));
        release.SetResult();
        await hanging;
    }

    [Fact]
    public async Task Deadline_CallThatBlocks_FailsTypedAtTheDeadline()
    {
        await using LocalGrainRuntime runtime = CreateRuntime(TimeSpan.FromMilliseconds(200));
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("slow");
        GrainCallTimeoutException error = await Assert.ThrowsAsync<GrainCallTimeoutException>(() => grain.BlockAsync(default));
        Assert.Equal("BlockAsync", error.Method);
        Assert.Contains("counter/slow.BlockAsync did not complete within 0.2 s", error.Message);
        Assert.Equal(1, await grain.IncrementAsync(default));
    }

    [Fact]
    public async Task Deadline_CallQueuedBehindAHungTurn_DoesNotHang()
    {
        await using LocalGrainRuntime runtime = CreateRuntime(TimeSpan.FromMilliseconds(300));
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("hung");
        var release = new TaskCompletionSource();
        Task hung = grain.HangIgnoringCancellationAsync(release, default);
        await Assert.ThrowsAsync<GrainCallTimeoutException>(() => grain.IncrementAsync(default));
        await Assert.ThrowsAsync<GrainCallTimeoutException>(() => hung);
        release.SetResult();
        Assert.Equal(1, await grain.IncrementAsync(default));
    }

    [Fact]
    public async Task Cancellation_ByCaller_IsCancellationNotTimeout()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => runtime.GetGrain<ICounterGrain>("c").BlockAsync(cancel.Token));
    }

    [Fact]
    public async Task Exception_InGrain_ReachesCallerAsIs()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ArgumentException error = await Assert.ThrowsAsync<ArgumentException>(() => runtime.GetGrain<ICounterGrain>("e").FailAsync("bad shape", default));
        Assert.Equal("bad shape", error.Message);
        Assert.Equal(1, await runtime.GetGrain<ICounterGrain>("e").IncrementAsync(default));
    }

    [Fact]
    public async Task IdleCollection_AfterIdleTimeout_DeactivatesAndNextCallReactivates()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("idle");
        Assert.Equal(1, await grain.IncrementAsync(default));
        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(0, await runtime.CollectIdleAsync(default));
        _clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(1, await runtime.CollectIdleAsync(default));
        Assert.Contains("deactivate idle IdleTimeout", _log);
        Assert.Equal(0, runtime.ActivationCount);
        Assert.Equal(1, await grain.IncrementAsync(default));
        Assert.Equal(2, _log.Count(l => l == "activate idle"));
    }

    [Fact]
    public async Task IdleCollection_GrainAsksToBeKept_OnlyTheOthersAreCollected()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        await runtime.GetGrain<ICounterGrain>("keep-me").IncrementAsync(default);
        await runtime.GetGrain<ICounterGrain>("drop-me").IncrementAsync(default);
        _clock.Advance(TimeSpan.FromSeconds(61));
        Assert.Equal(1, await runtime.CollectIdleAsync(default));
        Assert.Equal([new GrainId("counter", "keep-me")], runtime.ActivationIds);
        Assert.Equal(2, await runtime.GetGrain<ICounterGrain>("keep-me").IncrementAsync(default));
    }

    [Fact]
    public async Task DeactivateOnIdle_RequestedByGrain_NextCallGetsFreshActivation()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("bye");
        await grain.IncrementAsync(default);
        await grain.ByeAsync(default);
        Assert.Equal(1, await grain.IncrementAsync(default));
        Assert.Contains("deactivate bye Requested", _log);
    }

    [Fact]
    public async Task Shutdown_DeactivatesEveryActivation()
    {
        LocalGrainRuntime runtime = CreateRuntime();
        foreach (string key in new[] { "x", "y", "z" })
        {
            await runtime.GetGrain<ICounterGrain>(key).IncrementAsync(default);
        }

        await runtime.DeactivateAllAsync(default);
        Assert.Equal(3, _log.Count(l => l.EndsWith("ShuttingDown", StringComparison.Ordinal)));
        Assert.Equal(0, runtime.ActivationCount);
    }

    [Fact]
    public async Task OneWay_ReturnsOnceQueued_RunsInOrderWithLaterCalls()
    {
        await using LocalGrainRuntime runtime = CreateRuntime();
        ICounterGrain grain = runtime.GetGrain<ICounterGrain>("oneway");
        var release = new TaskCompletionSource();
        Task hanging = grain.HangIgnoringCancellationAsync(release, default);
        Task[] notes = Enumerable.Range(0, 20).Select(i => grain.NoteAsync(i, default)).ToArray();

        // The activation is busy with the hung turn, yet every one-way call has already returned.
        Assert.All(notes, n => Assert.True(n.IsCompletedSuccessfully));
        release.SetResult();
        await hanging;
        Assert.Equal(Enumerable.Range(0, 20), await grain.RecordedAsync(default));
    }

    [Fact]
    public void GetGrain_UnregisteredInterface_SaysSo()
    {
        var runtime = new LocalGrainRuntime(new GrainTypeRegistry());
        Assert.Contains("no grain class is registered for ICounterGrain", Assert.Throws<InvalidOperationException>(() => runtime.GetGrain<ICounterGrain>("a")).Message);
    }
}
