using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>The cost model's prediction for a <c>bench scaling</c> point: <see cref="LayerCostModel"/> with a profile, the point's link applied.</summary>
internal static class ScalingPrediction
{
    /// <summary>
    /// Predicted layer ms of a point under <paramref name="profile"/>. A shaped link is each silo's own veth, shaped by
    /// the kernel's qdisc: it becomes the link (its rate, not shared; its delay added to the profile's latency), whose
    /// time hides behind compute (overlap 1) while the cores' own work moving a block (the profile's transport rate)
    /// still adds to each step; loopback uses the profile as it is. Where the profile is a shared host measured on as
    /// many cores as the point's host and the point says which cores each shard's silo was pinned to, the model gives
    /// each shard those cores (<see cref="HostCores"/>: silos pinned to one core share it); otherwise each of P silos
    /// gets 1/P of the host. Null where the layout cannot run (the harness skips those points anyway).
    /// </summary>
    public static Func<ScalingPoint, double?> From(HardwareProfile profile) => point =>
    {
        LayoutPlan plan;
        try
        {
            plan = new LayoutPlan(ContextLayout.Parse(point.Layout), point.Silos, point.Tokens, point.QueryHeads, point.KeyValueHeads);
        }
        catch (ArgumentException)
        {
            return null;
        }

        HardwareProfile hw = point.LinkBitsPerSecond is { } bits
            ? profile with
            {
                LinkGbitPerSecond = bits / 1e9,
                LinkShared = false,
                Overlap = 1,
                LinkLatencyMicroseconds = profile.LinkLatencyMicroseconds + (point.LinkLatencyMicroseconds ?? 0),
            }
            : profile;
        int elementSize = DTypes.TryParseFloat(point.DType, out DType dtype) ? dtype.Size() : sizeof(float);
        HostCores? cores = hw.SharedHost && hw.HostCores == point.HostCores && point.CoresOfShard is { } pinned
            ? HostCores.FromPinning(point.HostCores, pinned)
            : null;
        return LayerCostModel.Predict(plan, AttentionMask.Parse(point.Mask), point.HeadDim, elementSize, hw, cores: cores).LayerMs;
    };
}
