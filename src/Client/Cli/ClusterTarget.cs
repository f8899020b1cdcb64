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

    /// <summary>The silos of the local cluster this target started, or null for a cluster reached by <c>--endpoint</c>.</summary>
    public LocalAttentionCluster? Local => _local;

    /// <summary>Checks the options naming the cluster, before anything starts: a wrong one throws <see cref="UsageException"/> naming it.</summary>
    /// <param name="defaultSilos">Silos of a local cluster when neither option is given; null: one of them is required.</param>
    public static ClusterChoice Parse(CommandLine options, string command, int? defaultSilos = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Has("endpoint") && options.Has("local-cluster"))
        {
            throw new UsageException($"{command}: give --endpoint URL (a running cluster) or --local-cluster N (silos in this process), not both");
        }

        if (options.Has("local-cluster") || (defaultSilos is not null && !options.Has("endpoint")))
        {
            if (options.Has("token"))
            {
                throw new UsageException($"{command}: --token goes with --endpoint (a local cluster makes its own)");
            }

            return new ClusterChoice(null, null, options.Int("local-cluster", defaultSilos ?? 4, 1, 64));
        }

        string endpoint = options.RequiredText("endpoint");
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out Uri? uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new UsageException($"{command}: --endpoint expects an http(s) URL of a silo, got '{endpoint}'");
        }

        string token = options.Text("token") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN")
            ?? throw new UsageException($"{command}: --endpoint needs the cluster's API token: --token T or LONGCLUSTER_TOKEN");
        return new ClusterChoice(uri, token, 0);
    }

    /// <summary><see cref="Parse"/>, then <see cref="StartAsync(ClusterChoice, CancellationToken)"/>.</summary>
    public static Task<ClusterTarget> StartAsync(CommandLine options, string command, int? defaultSilos = null) =>
        StartAsync(Parse(options, command, defaultSilos));

    /// <summary>Starts the local cluster chosen (returning once every silo sees all), or names the remote one.</summary>
    public static async Task<ClusterTarget> StartAsync(ClusterChoice choice, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(choice);
        if (choice.Endpoint is { } uri)
        {
            return new ClusterTarget(null, [uri], choice.Token!, $" on {uri.GetLeftPart(UriPartial.Authority)}");
        }

        LocalAttentionCluster local = await LocalAttentionCluster.StartAsync(choice.LocalSilos, cancellationToken: cancellationToken).ConfigureAwait(false);
        return new ClusterTarget(local, local.Endpoints, local.ApiToken, $" on a local cluster of {choice.LocalSilos} silos");
    }

    public async ValueTask DisposeAsync()
    {
        if (_local is not null)
        {
            await _local.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>The cluster a command's options name: <see cref="Endpoint"/> and <see cref="Token"/>, or <see cref="LocalSilos"/> silos in this process.</summary>
internal sealed record ClusterChoice(Uri? Endpoint, string? Token, int LocalSilos);
