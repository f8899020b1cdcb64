namespace LongCluster.Client;

/// <summary>Where and how a <see cref="LongClusterClient"/> talks to a cluster.</summary>
public sealed class LongClusterClientOptions
{
    /// <summary>HTTP endpoints of silos (any silo is a gateway); tried in turn when one fails.</summary>
    public IReadOnlyList<Uri> Endpoints { get; set; } = [];

    /// <summary>The cluster's API bearer token.</summary>
    public string Token { get; set; } = "";

    /// <summary>Deadline of one HTTP request (a layer over a long sequence can take minutes).</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromMinutes(30);

    /// <summary>Further attempts of a request whose failure says a retry can help (a silo failed or is busy).</summary>
    public int MaxRetries { get; set; } = 3;

    /// <summary>Wait before the first retry; doubled for each further one.</summary>
    public TimeSpan RetryDelay { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Control messages in MessagePack where the silo speaks it (<see cref="ControlFormat.Auto"/>), or always JSON.</summary>
    public ControlFormat ControlFormat { get; set; } = ControlFormat.Auto;

    /// <summary>Told of every retry before its wait (to log it, or show it beside a progress bar); called on the retrying task.</summary>
    public Action<RetryNotice>? OnRetry { get; set; }

    internal void Validate()
    {
        if (Endpoints is null || Endpoints.Count == 0)
        {
            throw new ArgumentException("at least one endpoint is required", nameof(Endpoints));
        }

        if (string.IsNullOrEmpty(Token))
        {
            throw new ArgumentException("the API token is required", nameof(Token));
        }

        if (!Enum.IsDefined(ControlFormat))
        {
            throw new ArgumentException($"ControlFormat must be Auto or Json, got {(int)ControlFormat}", nameof(ControlFormat));
        }

        if (MaxRetries < 0 || RequestTimeout <= TimeSpan.Zero || RetryDelay < TimeSpan.Zero)
        {
            throw new ArgumentException("MaxRetries must be >= 0, RequestTimeout positive and RetryDelay >= 0", nameof(MaxRetries));
        }
    }
}
