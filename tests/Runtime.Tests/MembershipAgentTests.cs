using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Tests;

/// <summary>A clock tests move by hand; heartbeats are driven by calling TickAsync.</summary>
internal sealed class ManualClock : TimeProvider
{
    private DateTimeOffset _now = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}

public sealed class MembershipAgentTests
{
    private static readonly MembershipOptions Options = new()
    {
        HeartbeatInterval = TimeSpan.FromSeconds(1),
        DeathTimeout = TimeSpan.FromSeconds(10),
        VotesForDeath = 2,
    };

    private readonly ManualClock _clock = new();
    private readonly InMemoryMembershipTable _table = new();

    [Fact]
    public async Task Join_ThreeSilos_EveryViewHasAllActive()
    {
        MembershipAgent[] silos = await JoinAsync(3);
        foreach (MembershipAgent silo in silos)
        {
            await silo.TickAsync(default);
        }

        foreach (MembershipAgent silo in silos)
        {
            Assert.Equal(silos.Select(s => s.Self).OrderBy(s => s.ToString(), StringComparer.Ordinal), silo.View.ActiveSilos);
        }
    }

    [Fact]
    public async Task Heartbeats_WithinTimeout_NobodySuspected()
    {
        MembershipAgent[] silos = await JoinAsync(3);
        for (int round = 0; round < 30; round++)
        {
            _clock.Advance(TimeSpan.FromSeconds(1));
            foreach (MembershipAgent silo in silos)
            {
                await silo.TickAsync(default);
            }
        }

        MembershipTableData data = await _table.ReadAllAsync(default);
        Assert.All(data.Rows, r => Assert.Empty(r.Entry.Suspicions));
        Assert.Equal(3, silos[0].View.ActiveSilos.Length);
    }

    [Fact]
    public async Task SilentSilo_ThreeSilos_NeedsTwoVotesThenDead()
    {
        MembershipAgent[] silos = await JoinAsync(3);
        MembershipAgent silent = silos[2];
        int seconds = await HeartbeatUntilSuspectedAsync(silos[0], silos[1], silent);

        Assert.Equal(10, seconds);
        Assert.Equal(SiloStatus.Active, silos[0].View.StatusOf(silent.Self));
        await silos[1].TickAsync(default);
        Assert.Equal(SiloStatus.Dead, silos[1].View.StatusOf(silent.Self));
        Assert.Equal(2, (await _table.ReadAllAsync(default)).Find(silent.Self)!.Value.Entry.Suspicions.Count);

        await silent.TickAsync(default);
        Assert.True(silent.DeclaredDead);
    }

    [Fact]
    public async Task SilentSilo_TwoSilos_OneVoteSuffices()
    {
        MembershipAgent[] silos = await JoinAsync(2);
        _clock.Advance(TimeSpan.FromSeconds(11));
        await silos[0].TickAsync(default);
        Assert.Equal(SiloStatus.Dead, silos[0].View.StatusOf(silos[1].Self));
        Assert.Equal([silos[0].Self], silos[0].View.ActiveSilos.ToArray());
    }

    [Fact]
    public async Task StaleVotes_OlderThanTimeout_DoNotCount()
    {
        MembershipAgent[] silos = await JoinAsync(3);

        // A vote by silo 0 from an earlier episode, long expired.
        MembershipTableData data = await _table.ReadAllAsync(default);
        (MembershipEntry row, string etag) = data.Find(silos[2].Self)!.Value;
        Assert.True(await _table.UpdateRowAsync(row with { Suspicions = [new Suspicion(silos[0].Self, _clock.GetUtcNow() - TimeSpan.FromSeconds(30))] }, etag, data.Version, default));

        await HeartbeatUntilSuspectedAsync(silos[1], silos[0], silos[2], alreadyVoted: 1);

        // Silo 1's fresh vote alone: the expired one was dropped, so the suspect is not dead yet.
        (MembershipEntry suspect, _) = (await _table.ReadAllAsync(default)).Find(silos[2].Self)!.Value;
        Assert.Equal(SiloStatus.Active, suspect.Status);
        Assert.Equal([silos[1].Self], suspect.Suspicions.Select(v => v.Suspecter).ToArray());
    }

    /// <summary>Ticks the two live silos every second until the first suspicion of <paramref name="silent"/> lands; returns the seconds it took.</summary>
    private async Task<int> HeartbeatUntilSuspectedAsync(MembershipAgent first, MembershipAgent second, MembershipAgent silent, int alreadyVoted = 0)
    {
        for (int seconds = 1; seconds <= 30; seconds++)
        {
            _clock.Advance(TimeSpan.FromSeconds(1));
            await first.TickAsync(default);
            IReadOnlyList<Suspicion> votes = (await _table.ReadAllAsync(default)).Find(silent.Self)!.Value.Entry.Suspicions;
            if (votes.Count > alreadyVoted || votes.Any(v => v.Suspecter == first.Self))
            {
                return seconds;
            }

            await second.TickAsync(default);
        }

        throw new Xunit.Sdk.XunitException("the silent silo was never suspected");
    }

    [Fact]
    public async Task Leave_Graceful_OthersSeeDeadWithoutVoting()
    {
        MembershipAgent[] silos = await JoinAsync(3);
        await silos[1].LeaveAsync(default);
        await silos[0].TickAsync(default);
        Assert.Equal(SiloStatus.Dead, silos[0].View.StatusOf(silos[1].Self));
        Assert.Empty((await _table.ReadAllAsync(default)).Find(silos[1].Self)!.Value.Entry.Suspicions);
        Assert.Equal(2, silos[0].View.ActiveSilos.Length);
    }

    [Fact]
    public async Task DeadRows_AfterDefunctAge_AreDeleted()
    {
        MembershipAgent[] silos = await JoinAsync(2, new MembershipOptions { DeathTimeout = TimeSpan.FromSeconds(10), DefunctRowAge = TimeSpan.FromMinutes(5) });
        await silos[1].LeaveAsync(default);
        _clock.Advance(TimeSpan.FromMinutes(6));
        await silos[0].TickAsync(default);
        Assert.Single((await _table.ReadAllAsync(default)).Rows);
    }

    [Fact]
    public async Task Start_RealClock_ViewsConvergeByEventNotPolling()
    {
        var table = new InMemoryMembershipTable();
        var fast = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(20), DeathTimeout = TimeSpan.FromSeconds(5) };
        await using var a = new MembershipAgent(table, Address(1), "a", fast);
        await using var b = new MembershipAgent(table, Address(2), "b", fast);
        await a.JoinAsync(default);
        a.Start();
        await b.JoinAsync(default);
        MembershipView view = await a.WaitForViewAsync(v => v.ActiveSilos.Length == 2, default).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Contains(b.Self, view.ActiveSilos);
        await b.LeaveAsync(default);
        view = await a.WaitForViewAsync(v => v.StatusOf(b.Self) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Single(view.ActiveSilos);
    }

    [Fact]
    public async Task RedisRestartedEmpty_SilosReinsertThemselves_ClusterCarriesOn()
    {
        await using RedisServerProcess server = await RedisServerProcess.StartAsync();
        var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = "restart", Redis = new RedisOptions { Port = server.Port } });
        await using (table)
        {
            var a = new MembershipAgent(table, Address(1), "a", Options, _clock);
            var b = new MembershipAgent(table, Address(2), "b", Options, _clock);
            await a.JoinAsync(default);
            await b.JoinAsync(default);

            await server.KillAsync();
            await Assert.ThrowsAsync<RedisException>(() => a.TickAsync(default));
            await server.RestartAsync();

            _clock.Advance(TimeSpan.FromSeconds(1));
            await a.TickAsync(default);
            await b.TickAsync(default);
            await a.TickAsync(default);
            Assert.Equal(2, a.View.ActiveSilos.Length);
            Assert.False(a.DeclaredDead || b.DeclaredDead);
        }
    }

    [Theory]
    [InlineData(0, 10, 2, "HeartbeatInterval must be positive")]
    [InlineData(1000, 1, 2, "must be at least two heartbeats")]
    [InlineData(1000, 10, 0, "VotesForDeath must be >= 1")]
    public void Options_Inconsistent_RefusedAtStart(int heartbeatMs, int deathSeconds, int votes, string expected)
    {
        var options = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(heartbeatMs), DeathTimeout = TimeSpan.FromSeconds(deathSeconds), VotesForDeath = votes };
        Assert.Contains(expected, Assert.Throws<ArgumentException>(() => new MembershipAgent(new InMemoryMembershipTable(), Address(1), "a", options)).Message);
    }

    private async Task<MembershipAgent[]> JoinAsync(int count, MembershipOptions? options = null)
    {
        var silos = new MembershipAgent[count];
        for (int i = 0; i < count; i++)
        {
            silos[i] = new MembershipAgent(_table, Address(i), $"silo-{i}", options ?? Options, _clock);
            await silos[i].JoinAsync(default);
        }

        return silos;
    }

    private static SiloAddress Address(int i) => new("127.0.0.1", 11000 + i, 7);
}
