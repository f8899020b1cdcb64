using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>The cost model's prediction for a <c>bench scaling</c> point: <see cref="LayerCostModel"/> with a profile, the point's link applied.</summary>
internal static class ScalingPrediction
{
    /// <summary>
    /// Predicted layer ms of a point under <paramref name="profile"/>. A shaped link caps the profile's link rate at
    /// the shaped rate and adds its delay to the profile's latency (the transport's own cost stays); loopback uses
    /// the profile as it is. Null where the layout cannot run (the harness skips those points anyway).
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
                LinkGbitPerSecond = Math.Min(profile.LinkGbitPerSecond, bits / 1e9),
                LinkLatencyMicroseconds = profile.LinkLatencyMicroseconds + (point.LinkLatencyMicroseconds ?? 0),
            }
            : profile;
        int elementSize = DTypes.TryParseFloat(point.DType, out DType dtype) ? dtype.Size() : sizeof(float);
        return LayerCostModel.Predict(plan, AttentionMask.Parse(point.Mask), point.HeadDim, elementSize, hw).LayerMs;
    };
}
