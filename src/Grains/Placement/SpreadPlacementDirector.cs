using System.IO.Hashing;
using System.Text;
using Orleans.Runtime.Placement;

namespace LongCluster.Grains.Placement;

/// <summary>
/// The director of <see cref="SpreadPlacement"/>. Placement runs on the caller's silo, once per activation, so the
/// choice is a pure function of the key and the candidate silos: every silo that places a shard of a sequence puts it
/// in the same place while they agree on membership.
/// </summary>
internal sealed class SpreadPlacementDirector(IClusterMembershipService membership) : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        SiloAddress[] silos = Candidates(context.GetCompatibleSilos(target), membership.CurrentSnapshot);
        return Task.FromResult(silos[SiloIndex(target.GrainIdentity.Key.ToString()!, silos.Length)]);
    }

    /// <summary>
    /// The silos to spread over, sorted by address: Orleans' compatible silos and every active member, less those
    /// membership says are leaving or dead. The compatible silos follow this silo's copy of the cluster manifest, which
    /// lagged membership by up to a minute after start-up (measured: one silo of four placed shards over three for 58 s
    /// after the manifest had stabilized); every LongCluster silo hosts the shard grain, so an active member the
    /// manifest does not list yet can take a shard, and a silo the manifest still lists after membership declared it
    /// gone cannot.
    /// </summary>
    internal static SiloAddress[] Candidates(IEnumerable<SiloAddress> compatible, ClusterMembershipSnapshot snapshot)
    {
        SiloAddress[] silos =
        [
            .. compatible
                .Where(s => snapshot.GetSiloStatus(s) is not (SiloStatus.ShuttingDown or SiloStatus.Stopping or SiloStatus.Dead))
                .Union(snapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress)),
        ];
        Array.Sort(silos, (a, b) => string.CompareOrdinal(a.ToParsableString(), b.ToParsableString()));
        return silos;
    }

    /// <summary>Which of <paramref name="silos"/> sorted silos holds the shard with grain key <paramref name="key"/>.</summary>
    internal static int SiloIndex(string key, int silos)
    {
        ShardKey shard = ShardKey.Parse(key);
        ulong offset = XxHash3.HashToUInt64(Encoding.UTF8.GetBytes(shard.Sequence));
        return (int)((offset + (ulong)shard.Index) % (ulong)silos);
    }
}
