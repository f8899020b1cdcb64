using LongCluster.Client;
using LongCluster.Service;

namespace LongCluster.Cli;

/// <summary>
/// The cluster a command talks to: <c>--endpoint URL</c> with <c>--token T</c> (or <c>LONGCLUSTER_TOKEN</c>), or
/// <c>--local-cluster N</c> silos started in this process and stopped with this object.
/// </summary>
internal sealed class ClusterTarget : IAsyncDisposable
{
    private readonly LocalAttentionCluster? _local;

    private ClusterTarget(LocalAttentionCluster? local, IReadOnlyList<Uri> endpoints, string token, string where)
    {
        _local = local;
        Endpoints = endpoints;
        Token = token;
        Where = where;
    }

    public IReadOnlyList<Uri> Endpoints { get; }

    public string Token { get; }

    /// <summary>Where requests go, for output: " on a local cluster of 3 silos", " on http://host:8080".</summary>
    public string Where { get; }

    /// <summary>SDK options for this cluster, the SDK's defaults otherwise.</summary>
    public LongClusterClientOptions ClientOptions() => new() { Endpoints = Endpoints, Token = Token };

    /// <param name="defaultSilos">Silos of a local cluster when neither option is given; null: one of them is required.</param>
    public static async Task<ClusterTarget> StartAsync(CommandLine options, string command, int? defaultSilos = null)
    {
        if (options.Has("local-cluster") || (defaultSilos is not null && !options.Has("endpoint")))
        {
            if (options.Has("endpoint"))
            {
                throw new UsageException($"{command}: give --endpoint or --local-cluster, not both");
            }

            int silos = options.Int("local-cluster", defaultSilos ?? 4, 1, 64);
            LocalAttentionCluster local = await LocalAttentionCluster.StartAsync(silos).ConfigureAwait(false);
            return new ClusterTarget(local, local.Endpoints, local.ApiToken, $" on a local cluster of {silos} silos");
        }

        string endpoint = options.RequiredText("endpoint");
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out Uri? uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"{command}: --endpoint expects an http(s) URL of a silo, got '{endpoint}'");
        }

        string token = options.Text("token") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN")
            ?? throw new UsageException($"{command}: --endpoint needs the cluster's API token: --token T or LONGCLUSTER_TOKEN");
        return new ClusterTarget(null, [uri], token, $" on {uri.GetLeftPart(UriPartial.Authority)}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_local is not null)
        {
            await _local.DisposeAsync().ConfigureAwait(false);
        }
    }
}
