using System.Globalization;
using System.Net.Http.Json;
using LongCluster.Service;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A local multi-process cluster: a redis-server on a free loopback port and N <c>longcluster-silo</c> processes
/// clustered through it. Start returns once every silo has printed its ready line; Dispose stops them all.
/// </summary>
internal sealed class SiloProcessCluster : IAsyncDisposable
{
    /// <summary>How many ports a silo tries when the one chosen for it is taken before it binds.</summary>
    private const int PortAttempts = 3;

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
    /// <param name="launch">Where and how silo i runs (its address, a command prefix, settings of its own); by default on loopback, plain <c>dotnet</c>.</param>
    /// <param name="redisHost">The address Redis listens on: one every silo can reach (loopback by default).</param>
    public static async Task<SiloProcessCluster> StartAsync(
        int silos, string siloAssembly, IReadOnlyDictionary<string, string> settings, TimeSpan timeout, ClusterCertificates authority, Func<int, SiloLaunch>? launch = null, string redisHost = "127.0.0.1")
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        ArgumentNullException.ThrowIfNull(settings);
        RedisServerProcess redis = await RedisServerProcess.StartAsync(host: redisHost).ConfigureAwait(false);
        var started = new SiloProcess?[silos];
        try
        {
            string[] addresses = await Task.WhenAll(Enumerable.Range(0, silos).Select(async i =>
            {
                SiloTlsOptions tls = authority.Issue($"silo-{i}");
                SiloLaunch how = launch?.Invoke(i) ?? SiloLaunch.Loopback;
                for (int attempt = 1; ; attempt++)
                {
                    var siloSettings = new Dictionary<string, string>(settings)
                    {
                        ["Clustering"] = SiloOptions.RedisClustering,
                        ["Redis"] = redis.Endpoint,
                        ["Host"] = how.Host,
                        ["HttpPort"] = "0",
                        ["SiloPort"] = RedisServerProcess.FreePort().ToString(CultureInfo.InvariantCulture),
                        ["Name"] = $"silo-{i}",
                        ["Tls:CertificateFile"] = tls.CertificateFile,
                        ["Tls:KeyFile"] = tls.KeyFile,
                        ["Tls:AuthorityFile"] = tls.AuthorityFile,
                    };
                    foreach ((string key, string value) in how.Settings)
                    {
                        siloSettings[key] = value;
                    }

                    started[i] = SiloProcess.Start(siloAssembly, siloSettings, how.Prefix);
                    try
                    {
                        return await started[i]!.ReadyAsync(timeout).ConfigureAwait(false);
                    }
                    catch (SiloExitedException e) when (e.PortTaken && attempt < PortAttempts)
                    {
                        // The silo port was free when chosen and taken before the silo bound it (another process, an
                        // outgoing connection's ephemeral port): choose another.
                        started[i]!.Dispose();
                        started[i] = null;
                    }
                }
            })).ConfigureAwait(false);
            SiloProcess[] running = [.. started.Select(s => s!)];
            await WaitForOneViewAsync(running, addresses, timeout).ConfigureAwait(false);
            return new SiloProcessCluster(redis, running, addresses);
        }
        catch
        {
            foreach (SiloProcess? silo in started)
            {
                silo?.Dispose();
            }

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
