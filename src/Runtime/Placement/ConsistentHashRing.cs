using System.Collections.Immutable;
using System.Text;
using LongCluster.Runtime.Membership;

namespace LongCluster.Runtime.Placement;

/// <summary>
/// Consistent hashing of grain ids over the active silos of a membership view: each silo owns many points on a
/// 64-bit ring, and a grain belongs to the first point at or after its hash. Every silo that holds the same view
/// computes the same owner, and a silo joining or leaving moves only the grains next to its points (about 1/N).
/// Hashes are FNV-1a over UTF-8 (stable across processes and runs, unlike <see cref="string.GetHashCode()"/>).
/// </summary>
public sealed class ConsistentHashRing
{
    /// <summary>Points per silo: enough that each silo's share stays within a few percent of 1/N.</summary>
    public const int DefaultPointsPerSilo = 128;

    private readonly ImmutableArray<(ulong Point, SiloAddress Silo)> _points;

    public ConsistentHashRing(IEnumerable<SiloAddress> silos, int pointsPerSilo = DefaultPointsPerSilo)
    {
        ArgumentNullException.ThrowIfNull(silos);
        ArgumentOutOfRangeException.ThrowIfLessThan(pointsPerSilo, 1);
        var points = new List<(ulong, SiloAddress)>();
        foreach (SiloAddress silo in silos.Distinct())
        {
            string name = silo.ToString();
            for (int i = 0; i < pointsPerSilo; i++)
            {
                points.Add((Hash($"{name}#{i}"), silo));
            }
        }

        points.Sort((a, b) => a.Item1 != b.Item1 ? a.Item1.CompareTo(b.Item1) : string.CompareOrdinal(a.Item2.ToString(), b.Item2.ToString()));
        _points = [.. points];
    }

    public bool IsEmpty => _points.IsEmpty;

    /// <summary>The silo that owns <paramref name="grain"/>'s directory entry (and, under hash placement, its activation).</summary>
    public SiloAddress Owner(GrainId grain)
    {
        if (_points.IsEmpty)
        {
            throw new InvalidOperationException("no active silo in the membership view");
        }

        ulong hash = Hash(grain.ToString());
        int lo = 0;
        int hi = _points.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_points[mid].Point < hash)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return _points[lo == _points.Length ? 0 : lo].Silo;
    }

    /// <summary>FNV-1a 64 with a final avalanche (so nearby strings land far apart on the ring).</summary>
    public static ulong Hash(string text)
    {
        ulong hash = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            hash ^= b;
            hash *= 1099511628211UL;
        }

        hash ^= hash >> 33;
        hash *= 0xff51afd7ed558ccdUL;
        hash ^= hash >> 33;
        hash *= 0xc4ceb9fe1a85ec53UL;
        hash ^= hash >> 33;
        return hash;
    }
}

/// <summary>Where a new activation goes.</summary>
public enum PlacementStrategy
{
    /// <summary>The grain's hash owner: the default.</summary>
    Hash,

    /// <summary>Members of one group (the P shard grains of a sequence) spread over the silos as evenly as possible.</summary>
    Spread,

    /// <summary>The caller's own silo (helpers that should sit next to their user).</summary>
    Local,
}

/// <summary>Placement decisions from a membership view; pure functions, so every silo decides the same.</summary>
public static class GrainPlacement
{
    /// <summary>
    /// Member <paramref name="index"/> of <paramref name="group"/> (of <paramref name="count"/>): the active silos in
    /// address order, starting at a silo chosen by the group's hash, one member each in turn. P members over N silos
    /// put ⌈P/N⌉ or ⌊P/N⌋ on each silo, and the answer is stable while the active set is.
    /// </summary>
    public static SiloAddress Spread(IReadOnlyList<SiloAddress> activeSilos, string group, int index, int count)
    {
        ArgumentNullException.ThrowIfNull(activeSilos);
        ArgumentNullException.ThrowIfNull(group);
        if (activeSilos.Count == 0)
        {
            throw new InvalidOperationException("no active silo in the membership view");
        }

        if (index < 0 || index >= count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"member index must be in 0..{count - 1}");
        }

        SiloAddress[] ordered = activeSilos.OrderBy(s => s.ToString(), StringComparer.Ordinal).ToArray();
        int start = (int)(ConsistentHashRing.Hash(group) % (ulong)ordered.Length);
        return ordered[(start + index) % ordered.Length];
    }

    public static SiloAddress Place(PlacementStrategy strategy, GrainId grain, ConsistentHashRing ring, IReadOnlyList<SiloAddress> activeSilos, SiloAddress caller, string? group = null, int index = 0, int count = 1)
    {
        ArgumentNullException.ThrowIfNull(ring);
        return strategy switch
        {
            PlacementStrategy.Hash => ring.Owner(grain),
            PlacementStrategy.Local => caller,
            PlacementStrategy.Spread => Spread(activeSilos, group ?? throw new ArgumentNullException(nameof(group), "spread placement needs a group"), index, count),
            _ => throw new ArgumentOutOfRangeException(nameof(strategy), strategy, "unknown placement strategy"),
        };
    }
}
