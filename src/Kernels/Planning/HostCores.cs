namespace LongCluster.Kernels.Planning;

/// <summary>
/// Which cores of one host each node runs on, for a <see cref="HardwareProfile.SharedHost"/> profile whose nodes are
/// pinned processes (<c>bench scaling</c>'s silos): nodes pinned to the same cores share them, nodes pinned to different
/// ones do not. <see cref="LayerCostModel"/> then gives each node the cores it has, shared equally with the
/// other nodes on them that are computing at the time, instead of 1/P of the host. Built by <see cref="FromPinning"/>.
/// </summary>
public sealed class HostCores
{
    private readonly int[] _groupOf;
    private readonly int[] _groupCores;

    private HostCores(int cores, int[] groupOf, int[] groupCores)
    {
        Cores = cores;
        _groupOf = groupOf;
        _groupCores = groupCores;
    }

    /// <summary>Cores of the host (what the profile's <see cref="HardwareProfile.KernelGflops"/> counts).</summary>
    public int Cores { get; }

    /// <summary>Nodes described.</summary>
    public int Nodes => _groupOf.Length;

    /// <summary>Groups of nodes pinned to the same cores.</summary>
    public int Groups => _groupCores.Length;

    /// <summary>The group node <paramref name="node"/> belongs to, 0..<see cref="Groups"/>−1.</summary>
    public int GroupOf(int node) => _groupOf[node];

    /// <summary>Cores of group <paramref name="group"/>.</summary>
    public int GroupCores(int group) => _groupCores[group];

    /// <summary>
    /// From each node's pinned cores (<paramref name="coresOfNode"/>[i]: the host core numbers node i may run on, in
    /// 0..<paramref name="hostCores"/>−1). Two nodes' core sets must be the same or disjoint: partial overlaps are
    /// refused (which node, which cores).
    /// </summary>
    public static HostCores FromPinning(int hostCores, IReadOnlyList<IReadOnlyCollection<int>> coresOfNode)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(hostCores, 1);
        ArgumentNullException.ThrowIfNull(coresOfNode);
        if (coresOfNode.Count == 0)
        {
            throw new ArgumentException("no nodes", nameof(coresOfNode));
        }

        var groups = new List<SortedSet<int>>();
        int[] groupOf = new int[coresOfNode.Count];
        for (int node = 0; node < coresOfNode.Count; node++)
        {
            var cores = new SortedSet<int>(coresOfNode[node] ?? throw new ArgumentException($"node {node} has no core list", nameof(coresOfNode)));
            if (cores.Count == 0 || cores.Min < 0 || cores.Max >= hostCores)
            {
                throw new ArgumentException(
                    $"node {node} is pinned to cores {{{string.Join(",", cores)}}}: expected at least one core in 0..{hostCores - 1}", nameof(coresOfNode));
            }

            int group = groups.FindIndex(g => g.SetEquals(cores));
            if (group < 0)
            {
                if (groups.FindIndex(g => g.Overlaps(cores)) is int other and >= 0)
                {
                    throw new ArgumentException(
                        $"node {node}'s cores {{{string.Join(",", cores)}}} overlap another node's {{{string.Join(",", groups[other])}}} without being the same set", nameof(coresOfNode));
                }

                group = groups.Count;
                groups.Add(cores);
            }

            groupOf[node] = group;
        }

        return new HostCores(hostCores, groupOf, [.. groups.Select(g => g.Count)]);
    }
}
