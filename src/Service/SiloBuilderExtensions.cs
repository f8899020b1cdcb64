using System.Net;
using LongCluster.Grains;
using LongCluster.Grains.Exchange;
using LongCluster.Grains.Memory;
using LongCluster.Grains.Placement;
using LongCluster.Grains.Telemetry;
using LongCluster.Grains.Status;
using LongCluster.Kernels.Gpu;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orleans.Configuration;
using Microsoft.Extensions.Hosting;
using Orleans.Connections.Security;
using StackExchange.Redis;

namespace LongCluster.Service;

/// <summary>The cluster-wide Orleans wiring of a LongCluster silo, in one place.</summary>
public static class SiloBuilderExtensions
{
    /// <summary>
    /// Largest grain-call body. Ring blocks and uploads that reach a silo other than their shard's travel as grain
    /// calls; Orleans' default of 100 MiB would tear down the silo-to-silo connection under a long sequence's block.
    /// </summary>
    public const int MaxMessageBodyBytes = 1 << 30;

    /// <summary>
    /// Identity, endpoints, the clustering <paramref name="options"/> name, mutual TLS when configured, the spread
    /// placement of shards, and the distributed grain directory (see <see cref="UseStrongGrainDirectory"/>).
    /// </summary>
    public static ISiloBuilder AddLongCluster(this ISiloBuilder silo, SiloOptions options)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentNullException.ThrowIfNull(options);
        IPAddress host = IPAddress.Parse(options.Host);
        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = options.ClusterId;
            o.ServiceId = options.ServiceId;
        });
        silo.Configure<Orleans.Configuration.SiloOptions>(o => o.SiloName = options.Name);
        silo.Configure<EndpointOptions>(o =>
        {
            o.AdvertisedIPAddress = host;
            o.SiloPort = options.SiloPort;
            o.SiloListeningEndpoint = new IPEndPoint(host, options.SiloPort);
            o.GatewayPort = 0; // clients come in through the HTTP API, not as Orleans clients
        });
        silo.Configure<SiloMessagingOptions>(o => o.MaxMessageBodySize = MaxMessageBodyBytes);
        switch (options.Clustering)
        {
            case SiloOptions.DevelopmentClustering:
                silo.UseDevelopmentClustering(options.PrimarySilo.Length > 0 ? IPEndPoint.Parse(options.PrimarySilo) : new IPEndPoint(host, options.SiloPort));
                break;
            case SiloOptions.RedisClustering:
                silo.UseRedisClustering(o => o.ConfigurationOptions = ConfigurationOptions.Parse(options.Redis));
                break;
            case SiloOptions.KubernetesClustering:
                silo.UseRedisClustering(o => o.ConfigurationOptions = ConfigurationOptions.Parse(options.Redis));
                silo.UseKubernetesHosting();
                break;
            default:
                throw new ArgumentException($"Clustering must be {SiloOptions.DevelopmentClustering}, {SiloOptions.RedisClustering} or {SiloOptions.KubernetesClustering}, got '{options.Clustering}'", nameof(options));
        }

        if (options.Tls.Enabled)
        {
            silo.UseMutualTls(options.Tls);
        }

        return silo.UseStrongGrainDirectory();
    }

    /// <summary>
    /// The attention service's grains and what they need on every silo: its options, resource limits and kernel backend, the
    /// exchange hub (the ring's mailboxes, and the exchange factory unless a test registers its own), the spread
    /// placement of shards, the slot for the silo's client-API URL, and the per-silo status service (resident bytes,
    /// hosted sequences, recent layer runs) the status page asks every silo.
    /// </summary>
    public static ISiloBuilder AddAttentionService(this ISiloBuilder silo, AttentionServiceOptions options)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        silo.Services.AddSingleton(options);
        // One kernel backend per process (KernelBackends.ForProcess): the silos of an in-process cluster share a device.
        silo.Services.AddSingleton(new SiloResources(options, KernelBackends.ForProcess(options.KernelBackend, options.DeviceBudgetBytes)));
        // Made now, so a crashed silo's spill files are removed at start-up; the container disposes it (this silo's files) at shutdown.
        var memory = new MemoryTier(options);
        silo.Services.AddSingleton(_ => memory);
        silo.Services.AddSingleton<SiloApiEndpoint>();
        silo.Services.AddSingleton<SiloMetrics>();
        // Made at start-up, so a silo's gauges exist before (and whether or not) a grain that needs them activates there.
        silo.AddStartupTask((services, cancellationToken) =>
        {
            _ = services.GetRequiredService<SiloMetrics>();
            return Task.CompletedTask;
        });
        silo.Services.AddSingleton<RecentLayers>();
        silo.Services.AddSingleton<SiloStatusClient>();
        silo.AddGrainService<SiloStatusService>();
        silo.Services.AddSingleton<ExchangeHub>();
        silo.Services.TryAddSingleton<IRunExchangeFactory>(s => s.GetRequiredService<ExchangeHub>());
        silo.AddPlacementDirector<SpreadPlacement, SpreadPlacementDirector>();
        silo.AddIncomingGrainCallFilter<ServiceErrorFilter>();
        return silo;
    }

    /// <summary>
    /// Orleans' distributed grain directory instead of its default. The default is eventually consistent: while
    /// membership changes a grain can briefly have two activations, and activations on surviving silos whose
    /// directory entry lived on a dead silo are deactivated. For a coordinator either is a lost sequence (its state
    /// is in memory only: a second or re-made activation knows nothing and answers 404), though a silo that held
    /// none of its pieces died. The distributed directory keeps one activation per grain through membership changes
    /// and leaves survivors' activations alone. It is marked experimental (ORLEANSEXP003); TestCluster uses it by
    /// default, and the tests check both properties under a killed silo.
    /// </summary>
    private static ISiloBuilder UseStrongGrainDirectory(this ISiloBuilder silo)
    {
#pragma warning disable ORLEANSEXP003
        return silo.AddDistributedGrainDirectory();
#pragma warning restore ORLEANSEXP003
    }

    private static void UseMutualTls(this ISiloBuilder silo, SiloTlsOptions tls)
    {
        var certificate = tls.LoadCertificate();
        var authority = tls.LoadAuthority();
        silo.UseTls(certificate, o =>
        {
            o.RemoteCertificateMode = RemoteCertificateMode.RequireCertificate;
            o.ClientCertificateMode = RemoteCertificateMode.RequireCertificate;
            o.RemoteCertificateValidation = (remote, _, errors) => SiloTlsOptions.Accept(remote, authority, errors);
        });
    }
}
