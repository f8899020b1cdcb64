using System.Diagnostics;
using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Tests;

/// <summary>Real silo processes (the longcluster-silo host) clustered through a real redis-server.</summary>
public sealed class SiloProcessTests
{
    [Fact]
    public async Task TwoSiloProcesses_OneKilled_SurvivorDeclaresItDeadWithinDeathTimeout_OtherLeavesGracefully()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(2, Cluster.SiloAssembly, Cluster.Settings(), TimeSpan.FromSeconds(60));
        (SiloProcess a, SiloProcess b) = (cluster.Silos[0], cluster.Silos[1]);
        (string aAddress, string bAddress) = (cluster.Addresses[0], cluster.Addresses[1]);
        RedisServerProcess redis = cluster.Redis;

        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = Cluster.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
        MembershipTableData joined = await table.ReadAllAsync(default);
        Assert.Equal(2, joined.Rows.Count(r => r.Entry.Status == SiloStatus.Active));

        var watch = Stopwatch.StartNew();
        b.Kill();
        await a.WaitForLineAsync(line => line.Contains($"Declared silo {bAddress} dead", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"declared dead after {watch.Elapsed} (death timeout 2 s, heartbeat 0.2 s)");

        a.Terminate();
        Assert.Equal(0, await a.ExitCodeAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(a.Lines, line => line.Contains($"Silo {aAddress} left the cluster", StringComparison.Ordinal));
        MembershipTableData after = await table.ReadAllAsync(default);
        Assert.All(after.Rows, r => Assert.Equal(SiloStatus.Dead, r.Entry.Status));
    }

    [Fact]
    public async Task SiloProcessKilled_ItsGrainsAnswerAgainFromAnotherSilo()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(2, Cluster.SiloAssembly, Cluster.Settings(), TimeSpan.FromSeconds(60));
        (SiloProcess a, SiloProcess b) = (cluster.Silos[0], cluster.Silos[1]);
        (string aAddress, string bAddress) = (cluster.Addresses[0], cluster.Addresses[1]);
        RedisServerProcess redis = cluster.Redis;

        // This test process joins the same cluster as a third silo and calls grains through it.
        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = Cluster.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
        var options = new LongCluster.Runtime.Hosting.SiloOptions
        {
            ClusterId = Cluster.ClusterId,
            Secret = Cluster.Secret,
            SiloPort = 0,
            HttpPort = 0,
            Name = "observer",
            Timing = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(200), DeathTimeout = TimeSpan.FromSeconds(2) },
        };
        await using LongCluster.Runtime.Hosting.Silo observer = await LongCluster.Runtime.Hosting.Silo.StartAsync(options, table, new GrainTypeRegistry());
        await observer.Membership.WaitForViewAsync(v => v.ActiveSilos.Length == 3, default).WaitAsync(TimeSpan.FromSeconds(30));

        string key = Enumerable.Range(0, 1000).Select(i => $"g{i}").First(k => observer.Router.OwnerOf(new GrainId("diagnostics", k)).ToString() == bAddress);
        ISiloDiagnosticsGrain grain = observer.GrainFactory.GetGrain<ISiloDiagnosticsGrain>(key);
        Assert.Equal(bAddress, await grain.WhereAsync(default));

        b.Kill();
        SiloAddress killed = SiloAddress.Parse(bAddress);
        await observer.Membership.WaitForViewAsync(v => v.StatusOf(killed) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(30));

        string now = await grain.WhereAsync(default);
        Assert.Contains(now, new[] { aAddress, observer.Address.ToString() });
    }

    [Fact]
    public async Task RedisRestartedEmpty_UnderRunningSiloProcesses_SilosRejoinAndCarryOn()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(2, Cluster.SiloAssembly, Cluster.Settings(), TimeSpan.FromSeconds(60));
        (SiloProcess a, SiloProcess b) = (cluster.Silos[0], cluster.Silos[1]);
        (string aAddress, string bAddress) = (cluster.Addresses[0], cluster.Addresses[1]);
        RedisServerProcess redis = cluster.Redis;

        await redis.KillAsync();
        await redis.RestartAsync();
        await a.WaitForLineAsync(line => line.Contains($"Silo {aAddress} has no row in the membership table", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        await b.WaitForLineAsync(line => line.Contains($"Silo {bAddress} has no row in the membership table", StringComparison.Ordinal), TimeSpan.FromSeconds(30));

        // The log line comes before the re-insert (and two re-inserts may collide and retry a heartbeat later), so
        // an observer joins and waits for a view in which both process silos are Active again.
        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = Cluster.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
        var timing = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(100), DeathTimeout = TimeSpan.FromSeconds(2) };
        await using var observer = new MembershipAgent(table, new SiloAddress("127.0.0.1", 1, 1), "observer", timing);
        await observer.JoinAsync(default);
        observer.Start();
        SiloAddress[] processes = [SiloAddress.Parse(aAddress), SiloAddress.Parse(bAddress)];
        await observer.WaitForViewAsync(v => processes.All(p => v.StatusOf(p) == SiloStatus.Active), default).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.DoesNotContain(a.Lines.Concat(b.Lines), l => l.Contains("was declared dead", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SiloProcess_NoSecret_ExitsWithMessageBeforeJoining()
    {
        var settings = new Dictionary<string, string>(Cluster.Settings(secret: "")) { ["Membership"] = "Redis", ["Redis:Port"] = "1" };
        using SiloProcess silo = SiloProcess.Start(Cluster.SiloAssembly, settings);
        Assert.NotEqual(0, await silo.ExitCodeAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(silo.Lines, line => line.Contains("Secret must be set to at least 16 characters", StringComparison.Ordinal));
    }

    /// <summary>Settings every silo process of these tests gets; Redis and ports come from the helper.</summary>
    private static class Cluster
    {
        public const string ClusterId = "process-tests";

        public const string Secret = "a process test secret, long enough";

        public static string SiloAssembly => Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll");

        public static Dictionary<string, string> Settings(string secret = Secret) => new()
        {
            ["ClusterId"] = ClusterId,
            ["Secret"] = secret,
            ["Service:ApiToken"] = "a process test api token",
            ["Timing:HeartbeatInterval"] = "00:00:00.2",
            ["Timing:DeathTimeout"] = "00:00:02",
        };
    }
}
