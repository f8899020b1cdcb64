using LongCluster.Grains.Status;

namespace LongCluster.Service;

/// <summary>One silo on the status page: its membership entry and, when it answered, its own report.</summary>
/// <param name="Address">Silo address (host:port@generation).</param>
/// <param name="Name">Silo name (<c>Name</c>, the pod name on Kubernetes).</param>
/// <param name="Status">Orleans membership status: Joining, Active, ShuttingDown, Stopping, Dead.</param>
/// <param name="Report">What the silo said about itself; null when it is not Active or did not answer.</param>
/// <param name="Problem">Why there is no report from an Active silo, or null.</param>
public sealed record SiloView(string Address, string Name, string Status, SiloReport? Report, string? Problem);
