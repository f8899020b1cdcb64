namespace LongCluster.Cli.Processes;

/// <summary>Where and how one silo process of a <see cref="SiloProcessCluster"/> runs.</summary>
/// <param name="Host">The address the silo binds (Orleans and HTTP) and advertises.</param>
/// <param name="Prefix">A command that execs the silo in place (<c>ip netns exec NS taskset -c 0</c>); empty: plain <c>dotnet</c>.</param>
/// <param name="Settings">Settings of this silo alone (<c>Service:KernelThreads</c>), over the cluster's.</param>
internal sealed record SiloLaunch(string Host, IReadOnlyList<string> Prefix, IReadOnlyDictionary<string, string> Settings)
{
    /// <summary>On loopback, plain <c>dotnet</c>, the cluster's settings only.</summary>
    public static SiloLaunch Loopback { get; } = new("127.0.0.1", [], new Dictionary<string, string>());
}
