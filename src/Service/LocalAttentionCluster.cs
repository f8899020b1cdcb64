using System.Security.Cryptography;
using LongCluster.Grains;
using LongCluster.Runtime;
using LongCluster.Runtime.Hosting;

namespace LongCluster.Service;

/// <summary>
/// N silos in this process hosting the attention service on the embedded default (in-memory membership, loopback
/// ports picked by the OS, a fresh API token): what <c>longcluster demo</c>, <c>attend --local-cluster</c> and the
/// cluster tests run on.
/// </summary>
public sealed class LocalAttentionCluster : IAsyncDisposable
{
    private LocalAttentionCluster(LocalCluster cluster, AttentionServiceOptions options)
    {
        Cluster = cluster;
        Options = options;
    }

    public LocalCluster Cluster { get; }

    public AttentionServiceOptions Options { get; }

    public string ApiToken => Options.ApiToken;

    /// <summary>Client endpoint of every live silo.</summary>
    public IReadOnlyList<Uri> Endpoints => [.. Cluster.Silos.Select(s => new Uri(s.Context.HttpEndpoint))];

    /// <param name="configure">Adjusts the service's options (limits); the token is set here.</param>
    public static async Task<LocalAttentionCluster> StartAsync(
        int silos, Action<AttentionServiceOptions>? configure = null, Action<SiloOptions>? configureSilo = null, CancellationToken cancellationToken = default)
    {
        string token = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
        // The silos share this machine's cores: each shard's kernel gets its share rather than all of them.
        var options = new AttentionServiceOptions { ApiToken = token, KernelThreads = Math.Max(1, Environment.ProcessorCount / silos) };
        configure?.Invoke(options);
        LocalCluster cluster = await LocalCluster.StartAsync(silos, new GrainTypeRegistry(), configureSilo, cancellationToken, [new AttentionService(options)]).ConfigureAwait(false);
        return new LocalAttentionCluster(cluster, options);
    }

    public ValueTask DisposeAsync() => Cluster.DisposeAsync();
}
