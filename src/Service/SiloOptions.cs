using System.Net;

namespace LongCluster.Service;

/// <summary>
/// One silo's place in a cluster, bound from configuration section <c>LongCluster</c> (appsettings, environment
/// <c>LongCluster__…</c>, command line). Kubernetes facts (<c>POD_NAME</c>, <c>POD_IP</c>) are read here and nowhere else.
/// </summary>
public sealed class SiloOptions
{
    /// <summary>Development: membership hosted by a primary silo in memory (one machine, nothing outside). Redis: Orleans' Redis membership table. Kubernetes: Redis membership plus Orleans' Kubernetes hosting (pod labels, pod deletion).</summary>
    public const string DevelopmentClustering = "Development";

    public const string RedisClustering = "Redis";

    public const string KubernetesClustering = "Kubernetes";

    /// <summary>Silos with the same cluster id (and service id) form one cluster.</summary>
    public string ClusterId { get; set; } = "longcluster";

    public string ServiceId { get; set; } = "longcluster";

    /// <summary>Name in logs and the membership table; on Kubernetes the pod name.</summary>
    public string Name { get; set; } = Environment.GetEnvironmentVariable("POD_NAME") ?? Environment.MachineName;

    /// <summary>Address the silo listens on and other silos reach it at; on Kubernetes the pod IP.</summary>
    public string Host { get; set; } = Environment.GetEnvironmentVariable("POD_IP") ?? "127.0.0.1";

    /// <summary>Silo-to-silo (Orleans) port.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Port of the client API, <c>/healthz</c>, <c>/readyz</c> and <c>/membership</c>; 0 picks a free one.</summary>
    public int HttpPort { get; set; } = 8080;

    /// <summary><see cref="DevelopmentClustering"/>, <see cref="RedisClustering"/> or <see cref="KubernetesClustering"/>.</summary>
    public string Clustering { get; set; } = DevelopmentClustering;

    /// <summary>Development clustering: <c>host:port</c> of the silo that hosts membership; empty when this silo is it.</summary>
    public string PrimarySilo { get; set; } = "";

    /// <summary>Redis (and Kubernetes) clustering: a StackExchange.Redis configuration string, e.g. <c>redis:6379,password=…,ssl=true</c>.</summary>
    public string Redis { get; set; } = "";

    /// <summary>Mutual TLS between silos; required outside development clustering.</summary>
    public SiloTlsOptions Tls { get; set; } = new();

    /// <summary>How long a SIGTERM drain may take (readiness drops, the silo leaves membership, its grains finish their calls).</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws naming the first setting that is wrong; called before anything starts.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ClusterId) || string.IsNullOrWhiteSpace(ServiceId))
        {
            throw new ArgumentException("ClusterId and ServiceId must be set", nameof(ClusterId));
        }

        if (!IPAddress.TryParse(Host, out _))
        {
            throw new ArgumentException($"Host must be an IP address, got '{Host}'", nameof(Host));
        }

        if (SiloPort is < 1 or > 65535 || HttpPort is < 0 or > 65535)
        {
            throw new ArgumentException($"SiloPort ({SiloPort}) must be in 1..65535 and HttpPort ({HttpPort}) in 0..65535", nameof(SiloPort));
        }

        if (Clustering is not (DevelopmentClustering or RedisClustering or KubernetesClustering))
        {
            throw new ArgumentException($"Clustering must be {DevelopmentClustering}, {RedisClustering} or {KubernetesClustering}, got '{Clustering}'", nameof(Clustering));
        }

        if (Clustering != DevelopmentClustering && string.IsNullOrWhiteSpace(Redis))
        {
            throw new ArgumentException($"{Clustering} clustering needs Redis (a StackExchange.Redis configuration string such as redis:6379)", nameof(Redis));
        }

        if (Clustering == DevelopmentClustering && PrimarySilo.Length > 0 && !IPEndPoint.TryParse(PrimarySilo, out _))
        {
            throw new ArgumentException($"PrimarySilo must be host:port, got '{PrimarySilo}'", nameof(PrimarySilo));
        }

        if (Clustering != DevelopmentClustering && !Tls.Enabled)
        {
            throw new ArgumentException(
                $"{Clustering} clustering needs silo-to-silo TLS (Tls:CertificateFile, Tls:KeyFile, Tls:AuthorityFile): a silo must prove it belongs to the cluster", nameof(Tls));
        }

        Tls.Validate();
        if (ShutdownTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("ShutdownTimeout must be positive", nameof(ShutdownTimeout));
        }
    }
}
