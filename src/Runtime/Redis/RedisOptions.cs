using System.Net.Security;

namespace LongCluster.Runtime.Redis;

/// <summary>Where and how to reach a Redis server.</summary>
public sealed class RedisOptions
{
    /// <summary>Redis' own default port.</summary>
    public const int DefaultPort = 6379;

    public string Host { get; set; } = "127.0.0.1";

    public int Port { get; set; } = DefaultPort;

    /// <summary>ACL user; null uses the default user (plain <c>requirepass</c>).</summary>
    public string? User { get; set; }

    public string? Password { get; set; }

    public bool UseTls { get; set; }

    /// <summary>Name the server certificate must carry; defaults to <see cref="Host"/>.</summary>
    public string? TlsServerName { get; set; }

    /// <summary>Custom certificate check (a private CA in tests); null means the system's validation.</summary>
    public RemoteCertificateValidationCallback? ServerCertificateValidation { get; set; }

    /// <summary>How long to connect (TCP, TLS and AUTH together) before giving up.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long one command may take; a timed-out connection is dropped and the next command reconnects.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Throws naming the first setting that is out of range.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Host))
        {
            throw new ArgumentException("Redis Host is empty", nameof(Host));
        }

        if (Port is < 1 or > 65535)
        {
            throw new ArgumentException($"Redis Port must be in 1..65535, got {Port}", nameof(Port));
        }

        if (ConnectTimeout <= TimeSpan.Zero || CommandTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("Redis ConnectTimeout and CommandTimeout must be positive", nameof(CommandTimeout));
        }
    }
}
