using System.Text;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Hosting;

/// <summary>Configuration of one silo, bound from appsettings, environment (<c>LongCluster__…</c>) and command line.</summary>
public sealed class SiloOptions
{
    /// <summary>Silos with the same id form one cluster.</summary>
    public string ClusterId { get; set; } = "longcluster";

    /// <summary>Name in logs and the membership table; on Kubernetes the pod name.</summary>
    public string Name { get; set; } = Environment.GetEnvironmentVariable("POD_NAME") ?? Environment.MachineName;

    /// <summary>Address other silos reach this one at (and bind to); on Kubernetes the pod IP.</summary>
    public string Host { get; set; } = Environment.GetEnvironmentVariable("POD_IP") ?? "127.0.0.1";

    /// <summary>Silo-to-silo port; 0 picks a free one.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>HTTP port of /healthz and /readyz (and, later, the client API); 0 picks a free one.</summary>
    public int HttpPort { get; set; } = 8080;

    /// <summary>Shared cluster secret, at least 16 characters; required.</summary>
    public string Secret { get; set; } = "";

    /// <summary><c>InMemory</c> (one process, development) or <c>Redis</c>.</summary>
    public string Membership { get; set; } = "InMemory";

    public RedisOptions Redis { get; set; } = new();

    public MembershipOptions Timing { get; set; } = new();

    public GrainRuntimeOptions Grains { get; set; } = new();

    public byte[] SecretBytes => Encoding.UTF8.GetBytes(Secret);

    /// <summary>Throws naming the first setting that is wrong; called before anything starts.</summary>
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ClusterId))
        {
            throw new ArgumentException("ClusterId is empty", nameof(ClusterId));
        }

        if (Encoding.UTF8.GetByteCount(Secret ?? "") < 16)
        {
            throw new ArgumentException("Secret must be set to at least 16 characters (LongCluster__Secret)", nameof(Secret));
        }

        if (SiloPort is < 0 or > 65535 || HttpPort is < 0 or > 65535)
        {
            throw new ArgumentException($"SiloPort ({SiloPort}) and HttpPort ({HttpPort}) must be in 0..65535", nameof(SiloPort));
        }

        if (Membership is not ("InMemory" or "Redis"))
        {
            throw new ArgumentException($"Membership must be InMemory or Redis, got '{Membership}'", nameof(Membership));
        }

        if (Membership == "Redis")
        {
            Redis.Validate();
        }

        Timing.Validate();
        Grains.Validate();
    }
}
