using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using LongCluster.Service;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A silo in its own process (the <c>longcluster-silo</c> host), with its output captured line by line so callers
/// can await what it says ("ready", "declared dead", "left") instead of polling.
/// </summary>
internal sealed class SiloProcess : IDisposable
{
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

    /// <summary>Starts <c>dotnet <paramref name="siloAssembly"/></c> with <c>--LongCluster:Key=Value</c> for every setting.</summary>
    public static SiloProcess Start(string siloAssembly, IEnumerable<KeyValuePair<string, string>> settings)
    {
        ArgumentNullException.ThrowIfNull(siloAssembly);
        ArgumentNullException.ThrowIfNull(settings);
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(siloAssembly);
        foreach ((string key, string value) in settings)
        {
            start.ArgumentList.Add($"--LongCluster:{key}={value}");
        }

        var silo = new SiloProcess(new Process { StartInfo = start });
        silo._process.OutputDataReceived += (_, e) => silo.Add(e.Data);
        silo._process.ErrorDataReceived += (_, e) => silo.Add(e.Data);
        silo._process.Start();
        silo._process.BeginOutputReadLine();
        silo._process.BeginErrorReadLine();
        return silo;
    }

    /// <summary>The silo's HTTP base URL (client API, health), known once <see cref="ReadyAsync"/> has returned.</summary>
    public Uri? HttpEndpoint { get; private set; }

    /// <summary>Waits for the host's ready line (<c>LongCluster silo ADDRESS ready; http port N</c>) and returns the silo address it names.</summary>
    public async Task<string> ReadyAsync(TimeSpan timeout)
    {
        string line = await WaitForLineAsync(l => l.StartsWith(SiloHost.ReadyLine, StringComparison.Ordinal), timeout).ConfigureAwait(false);
        string[] words = line.Split(' ');
        string address = words[2];
        HttpEndpoint = new Uri($"http://{address[..address.LastIndexOf(':')]}:{words[^1]}");
        return address;
    }

    /// <summary>The first output line (already seen or still to come) that matches.</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(match);
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

    public int ProcessId => _process.Id;

    /// <summary>SIGKILL: no leave, no cleanup.</summary>
    public void Kill() => _process.Kill();

    /// <summary>SIGTERM, as Kubernetes sends before it kills a pod: the silo leaves gracefully.</summary>
    public void Terminate()
    {
        using Process kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    public async Task<int> ExitCodeAsync(TimeSpan timeout)
    {
        await _process.WaitForExitAsync().WaitAsync(timeout).ConfigureAwait(false);
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

/// <summary>
/// A local multi-process cluster: a redis-server on a free loopback port and N <c>longcluster-silo</c> processes
/// clustered through it. Start returns once every silo has printed its ready line; Dispose stops them all.
/// </summary>
internal sealed class SiloProcessCluster : IAsyncDisposable
{
    private SiloProcessCluster(RedisServerProcess redis, IReadOnlyList<SiloProcess> silos, IReadOnlyList<string> addresses)
    {
        Redis = redis;
        Silos = silos;
        Addresses = addresses;
    }

    public RedisServerProcess Redis { get; }

    public IReadOnlyList<SiloProcess> Silos { get; }

    /// <summary>Silo address of each process, in start order.</summary>
    public IReadOnlyList<string> Addresses { get; }

    /// <param name="siloAssembly">Path of <c>longcluster-silo.dll</c>.</param>
    /// <param name="settings">Settings for every silo (ClusterId, Service:ApiToken, Tls:…); Redis and ports are set here.</param>
    /// <param name="authority">Issues each silo its TLS certificate.</param>
    public static async Task<SiloProcessCluster> StartAsync(int silos, string siloAssembly, IReadOnlyDictionary<string, string> settings, TimeSpan timeout, ClusterCertificates authority)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        ArgumentNullException.ThrowIfNull(settings);
        RedisServerProcess redis = await RedisServerProcess.StartAsync().ConfigureAwait(false);
        var started = new List<SiloProcess>();
        try
        {
            for (int i = 0; i < silos; i++)
            {
                SiloTlsOptions tls = authority.Issue($"silo-{i}");
                started.Add(SiloProcess.Start(siloAssembly, new Dictionary<string, string>(settings)
                {
                    ["Clustering"] = SiloOptions.RedisClustering,
                    ["Redis"] = redis.Endpoint,
                    ["HttpPort"] = "0",
                    ["SiloPort"] = RedisServerProcess.FreePort().ToString(CultureInfo.InvariantCulture),
                    ["Name"] = $"silo-{i}",
                    ["Tls:CertificateFile"] = tls.CertificateFile,
                    ["Tls:KeyFile"] = tls.KeyFile,
                    ["Tls:AuthorityFile"] = tls.AuthorityFile,
                }));
            }

            string[] addresses = await Task.WhenAll(started.Select(s => s.ReadyAsync(timeout))).ConfigureAwait(false);
            await WaitForOneViewAsync(started, addresses, timeout).ConfigureAwait(false);
            return new SiloProcessCluster(redis, started, addresses);
        }
        catch
        {
            started.ForEach(s => s.Dispose());
            await redis.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Waits until every silo's view (<c>GET /membership</c>) holds exactly the silos started: before that, two
    /// gateways may place a grain on different silos.
    /// </summary>
    private static async Task WaitForOneViewAsync(IReadOnlyList<SiloProcess> silos, IReadOnlyList<string> addresses, TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        using var deadline = new CancellationTokenSource(timeout);
        string[] expected = [.. addresses.Order(StringComparer.Ordinal)];
        foreach (SiloProcess silo in silos)
        {
            while (true)
            {
                MembershipSummary? view = null;
                try
                {
                    view = await http.GetFromJsonAsync<MembershipSummary>(new Uri(silo.HttpEndpoint!, "membership"), deadline.Token).ConfigureAwait(false);
                }
                catch (HttpRequestException)
                {
                }

                if (view is not null && view.Active.Order(StringComparer.Ordinal).SequenceEqual(expected))
                {
                    break;
                }

                await Task.Delay(50, deadline.Token).ConfigureAwait(false);
            }
        }
    }

    /// <summary>SIGTERM to every silo and waits for them to leave and exit; returns their exit codes.</summary>
    public async Task<int[]> StopAsync(TimeSpan timeout)
    {
        foreach (SiloProcess silo in Silos)
        {
            silo.Terminate();
        }

        return await Task.WhenAll(Silos.Select(s => s.ExitCodeAsync(timeout))).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (SiloProcess silo in Silos)
        {
            silo.Dispose();
        }

        await Redis.DisposeAsync().ConfigureAwait(false);
    }
}
