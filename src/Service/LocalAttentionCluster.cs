using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using LongCluster.Grains;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LongCluster.Service;

/// <summary>
/// N silos in this process hosting the attention service on the embedded default: Orleans' development clustering
/// (membership kept in memory by silo 0, the primary), loopback ports picked free, a fresh API token. What
/// <c>longcluster demo</c>, <c>local-cluster</c>, <c>attend --local-cluster</c> and the cluster tests run on. Start
/// returns once every silo sees all N active.
/// </summary>
public sealed class LocalAttentionCluster : IAsyncDisposable
{
    private readonly List<LocalSilo> _silos;

    private LocalAttentionCluster(List<LocalSilo> silos, AttentionServiceOptions options)
    {
        _silos = silos;
        Options = options;
    }

    /// <summary>The silos still running, silo 0 (the primary, which holds membership) first.</summary>
    public IReadOnlyList<LocalSilo> Silos => _silos;

    public AttentionServiceOptions Options { get; }

    public string ApiToken => Options.ApiToken;

    /// <summary>Client endpoint of every live silo.</summary>
    public IReadOnlyList<Uri> Endpoints => [.. _silos.Select(s => s.Endpoint)];

    /// <param name="configure">Adjusts the service's options (limits); the token is set here.</param>
    /// <param name="configureSilo">Adds to each silo's Orleans wiring (tests: membership timing, an exchange decorator).</param>
    /// <param name="configureHost">Adds to each silo's host before it is built (configuration such as <c>OTEL_*</c> settings).</param>
    public static async Task<LocalAttentionCluster> StartAsync(
        int silos,
        Action<AttentionServiceOptions>? configure = null,
        Action<ISiloBuilder>? configureSilo = null,
        CancellationToken cancellationToken = default,
        Action<WebApplicationBuilder>? configureHost = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        string token = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
        // The silos share this machine's cores: each shard's kernel gets its share rather than all of them; and
        // layout auto plans with the profile of silos sharing one host.
        var options = new AttentionServiceOptions { ApiToken = token, KernelThreads = Math.Max(1, Environment.ProcessorCount / silos), CostProfile = "this-machine" };
        configure?.Invoke(options);
        string clusterId = $"local-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}";
        var started = new List<LocalSilo>();
        string primary = "";
        try
        {
            for (int i = 0; i < silos; i++)
            {
                var silo = new SiloOptions
                {
                    ClusterId = clusterId,
                    ServiceId = clusterId,
                    Name = $"silo-{i}",
                    Host = "127.0.0.1",
                    SiloPort = FreePort(),
                    HttpPort = 0,
                    PrimarySilo = primary,
                    ShutdownTimeout = TimeSpan.FromSeconds(10),
                };
                primary = primary.Length == 0 ? $"127.0.0.1:{silo.SiloPort}" : primary;
                WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
                builder.Logging.ClearProviders();
                // The process's Ctrl+C and SIGTERM belong to whoever owns the cluster (a command, a test), which stops
                // every silo in order; a silo's own console lifetime would stop just that host and swallow the signal.
                builder.Services.AddSingleton<IHostLifetime, OwnedLifetime>();
                configureHost?.Invoke(builder);
                WebApplication app = SiloHost.Build(builder, silo, options, configureSilo);
                var handle = new LocalSilo(i, app);
                started.Add(handle);
                await app.StartAsync(cancellationToken).ConfigureAwait(false);
            }

            foreach (LocalSilo silo in started)
            {
                await silo.WaitForActiveAsync(silos, cancellationToken).ConfigureAwait(false);
            }

            return new LocalAttentionCluster(started, options);
        }
        catch
        {
            foreach (LocalSilo silo in started)
            {
                await silo.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>
    /// Stops silo <paramref name="index"/> at once (its grains are not deactivated gracefully; the others find it
    /// dead) and removes it from <see cref="Silos"/>. Silo 0 holds membership and cannot be killed.
    /// </summary>
    public async Task<string> KillAsync(int index)
    {
        if (index == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(index), "silo 0 hosts the development membership; killing it would end the cluster");
        }

        LocalSilo silo = _silos[index];
        string address = silo.Address;
        _silos.RemoveAt(index);
        using (var now = new CancellationTokenSource())
        {
            await now.CancelAsync().ConfigureAwait(false);
            try
            {
                await silo.App.StopAsync(now.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        await silo.DisposeAsync().ConfigureAwait(false);
        return address;
    }

    /// <summary>Stops every silo gracefully, silo 0 (membership) last.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (LocalSilo silo in Enumerable.Reverse(_silos).ToArray())
        {
            await silo.DisposeAsync().ConfigureAwait(false);
        }

        _silos.Clear();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A host lifetime that leaves the process's signals alone: the cluster's owner starts and stops the host.</summary>
    private sealed class OwnedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
