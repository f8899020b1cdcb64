using System.IO.Hashing;
using System.Text;
using Orleans.Runtime.Placement;

namespace LongCluster.Grains.Placement;

/// <summary>
/// The director of <see cref="SpreadPlacement"/>. Placement runs on the caller's silo, once per activation, so the
/// choice is a pure function of the key and the compatible (active) silos: every silo that places a shard of a
/// sequence puts it in the same place while they agree on membership.
/// </summary>
internal sealed class SpreadPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        SiloAddress[] silos = context.GetCompatibleSilos(target);
        Array.Sort(silos, (a, b) => string.CompareOrdinal(a.ToParsableString(), b.ToParsableString()));
        return Task.FromResult(silos[SiloIndex(target.GrainIdentity.Key.ToString()!, silos.Length)]);
    }

    /// <summary>Which of <paramref name="silos"/> sorted silos holds the shard with grain key <paramref name="key"/>.</summary>
    internal static int SiloIndex(string key, int silos)
    {
        ShardKey shard = ShardKey.Parse(key);
        ulong offset = XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(shard.Sequence));
        return (int)((offset + (ulong)shard.Index) % (ulong)silos);
    }
}
