using System.Diagnostics;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Tests;

/// <summary>Real silo processes (the longcluster-silo host) clustered through a real redis-server.</summary>
public sealed class SiloProcessTests
{
    [Fact]
    public async Task TwoSiloProcesses_OneKilled_SurvivorDeclaresItDeadWithinDeathTimeout_OtherLeavesGracefully()
    {
        await using RedisServer redis = await RedisServer.StartAsync();
        using SiloProcess a = SiloProcess.Start(redis.Port);
        using SiloProcess b = SiloProcess.Start(redis.Port);
        string aAddress = await a.ReadyAsync();
        string bAddress = await b.ReadyAsync();

        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = SiloProcess.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
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
        await using RedisServer redis = await RedisServer.StartAsync();
        using SiloProcess a = SiloProcess.Start(redis.Port);
        using SiloProcess b = SiloProcess.Start(redis.Port);
        string aAddress = await a.ReadyAsync();
        string bAddress = await b.ReadyAsync();

        // This test process joins the same cluster as a third silo and calls grains through it.
        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = SiloProcess.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
        var options = new LongCluster.Runtime.Hosting.SiloOptions
        {
            ClusterId = SiloProcess.ClusterId,
            Secret = SiloProcess.Secret,
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
        await using RedisServer redis = await RedisServer.StartAsync();
        using SiloProcess a = SiloProcess.Start(redis.Port);
        using SiloProcess b = SiloProcess.Start(redis.Port);
        string aAddress = await a.ReadyAsync();
        string bAddress = await b.ReadyAsync();

        await redis.KillAsync();
        await redis.RestartAsync();
        await a.WaitForLineAsync(line => line.Contains($"Silo {aAddress} has no row in the membership table", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        await b.WaitForLineAsync(line => line.Contains($"Silo {bAddress} has no row in the membership table", StringComparison.Ordinal), TimeSpan.FromSeconds(30));

        // Both are back as Active, and neither was declared dead meanwhile.
        await using var table = new RedisMembershipTable(new RedisClusteringOptions { ClusterId = SiloProcess.ClusterId, Redis = new RedisOptions { Port = redis.Port } });
        MembershipTableData data = await table.ReadAllAsync(default);
        Assert.Equal(2, data.Rows.Count(r => r.Entry.Status == SiloStatus.Active));
        Assert.DoesNotContain(a.Lines.Concat(b.Lines), l => l.Contains("was declared dead", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SiloProcess_NoSecret_ExitsWithMessageBeforeJoining()
    {
        using SiloProcess silo = SiloProcess.Start(redisPort: 1, secret: "");
        Assert.NotEqual(0, await silo.ExitCodeAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains(silo.Lines, line => line.Contains("Secret must be set to at least 16 characters", StringComparison.Ordinal));
    }

    private sealed class SiloProcess : IDisposable
    {
        public const string ClusterId = "process-tests";

        public const string Secret = "a process test secret, long enough";

        private readonly Process _process;
        private readonly List<string> _lines = [];
        private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Found)> _waiters = [];

        private SiloProcess(Process process) => _process = process;

        public IReadOnlyList<string> Lines
        {
            get
            {
                lock (_lines)
                {
                    return [.. _lines];
                }
            }
        }

        public static SiloProcess Start(int redisPort, string secret = Secret)
        {
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll"));
            foreach (string setting in new[]
            {
                $"--LongCluster:ClusterId={ClusterId}", $"--LongCluster:Secret={secret}", "--LongCluster:Membership=Redis",
                $"--LongCluster:Redis:Port={redisPort}", "--LongCluster:HttpPort=0", "--LongCluster:SiloPort=0",
                "--LongCluster:Timing:HeartbeatInterval=00:00:00.2", "--LongCluster:Timing:DeathTimeout=00:00:02",
            })
            {
                start.ArgumentList.Add(setting);
            }

            var silo = new SiloProcess(new Process { StartInfo = start });
            silo._process.OutputDataReceived += (_, e) => silo.Add(e.Data);
            silo._process.ErrorDataReceived += (_, e) => silo.Add(e.Data);
            silo._process.Start();
            silo._process.BeginOutputReadLine();
            silo._process.BeginErrorReadLine();
            return silo;
        }

        /// <summary>Waits for the host's ready line and returns the silo address it names.</summary>
        public async Task<string> ReadyAsync()
        {
            string line = await WaitForLineAsync(l => l.StartsWith("LongCluster silo ", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
            return line.Split(' ')[2];
        }

        public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
        {
            var found = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_lines)
            {
                string? seen = _lines.FirstOrDefault(match);
                if (seen is not null)
                {
                    return Task.FromResult(seen);
                }

                _waiters.Add((match, found));
            }

            return found.Task.WaitAsync(timeout);
        }

        public void Kill() => _process.Kill();

        /// <summary>SIGTERM, as Kubernetes sends before it kills a pod.</summary>
        public void Terminate() => Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();

        public async Task<int> ExitCodeAsync(TimeSpan timeout)
        {
            await _process.WaitForExitAsync().WaitAsync(timeout);
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                _process.WaitForExit();
            }

            _process.Dispose();
        }

        private void Add(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (_lines)
            {
                _lines.Add(line);
                foreach ((Func<string, bool> match, TaskCompletionSource<string> found) in _waiters.ToArray())
                {
                    if (match(line))
                    {
                        found.TrySetResult(line);
                        _waiters.RemoveAll(w => w.Found == found);
                    }
                }
            }
        }
    }
}
