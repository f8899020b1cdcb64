using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Planning;

/// <summary>
/// Predicts the wall time of one layer of one chunk (the sequence's first: no earlier KV) under a layout on P nodes,
/// following what <see cref="ContextParallelRank{T}.PrefillChunkAsync"/> does, from the <see cref="RingSchedule"/>'s
/// live pairs and the <see cref="HardwareProfile"/>. With F = the profile's FLOP/s per node
/// (<see cref="HardwareProfile.NodeFlopsPerSecond"/>), B = its link bytes/s per node
/// (<see cref="HardwareProfile.NodeBytesPerSecond"/>), L = its latency, e = bytes per element, m = 8 bytes of position
/// per row (+ 4 of document id for document masks), R ring shards × U Ulysses members:
/// <list type="number">
/// <item>Scatter all-to-all (U &gt; 1): rank r sends each other member of its group its own rows restricted to that
/// member's heads, rows · ((Hq_m + 2·Hkv_m)·d·e + m) bytes, and receives theirs for its own heads; all sends leave at
/// once, so it takes L + max(sent, received) / B. The layer pays the slowest rank's.</item>
/// <item>Ring, R steps: at step s rank r computes c(s, r) = work(s, r) · 4·d / F, work being live pairs × the rank's
/// query heads (<see cref="RingSchedule.Work"/>), while the block it needs next is on the wire:
/// t(s, r) = L + rows · (2·Hkv_r·d·e + m) / B (none after the last step). The driver sends a block before computing
/// on it, so step s takes max_r [max(c, t) + (1 − overlap) · min(c, t)] + the profile's step overhead.</item>
/// <item>Gather all-to-all (U &gt; 1): each member sends every other the O rows (d floats) and LSE (1 float) of the
/// other's tokens for its own heads: L + max(sent, received) / B, the slowest rank's.</item>
/// <item>Plus the profile's fixed layer overhead.</item>
/// </list>
/// The ideal is the single-node compute time of the same chunk divided by P: Σ live pairs × Hq × 4·d / F(1) / P.
/// Not modelled: merging partials and copying rows (in the overheads), earlier chunks' KV (a later chunk's ring blocks
/// carry a shard's whole history), partly masked kernel tiles costing a whole tile (small next to full tiles unless
/// shards hold few tiles), and contention beyond what <see cref="HardwareProfile.SharedHost"/> and
/// <see cref="HardwareProfile.LinkShared"/> express. The result depends on its inputs alone.
/// </summary>
public static class LayerCostModel
{
    /// <summary>
    /// The prediction for one layer of the first chunk of <paramref name="plan"/>'s tokens. <paramref name="documentLength"/>
    /// is the tokens per document for document masks (documents are consecutive runs), as for <see cref="RingSchedule.Create"/>.
    /// </summary>
    public static LayerPrediction Predict(LayoutPlan plan, AttentionMask mask, int headDim, int elementSize, HardwareProfile hw, int documentLength = 0)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return Predict(RingSchedule.Create(plan, mask, headDim, elementSize, documentLength), mask, headDim, elementSize, hw);
    }

    /// <summary>The prediction from a schedule already made (with the same mask, head dim and element size).</summary>
    public static LayerPrediction Predict(RingSchedule schedule, AttentionMask mask, int headDim, int elementSize, HardwareProfile hw)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(hw);
        ArgumentOutOfRangeException.ThrowIfLessThan(headDim, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(elementSize, 1);
        LayoutPlan plan = schedule.Plan;
        if (plan.Tokens < 1)
        {
            throw new ArgumentException("the plan's chunk has no tokens: there is nothing to predict", nameof(schedule));
        }

        int nodes = plan.Shards;
        double flops = hw.NodeFlopsPerSecond(nodes);
        double bytesPerSecond = hw.NodeBytesPerSecond(nodes);
        double latency = hw.LinkLatencyMicroseconds * 1e-6;
        double flopsPerWork = 4.0 * headDim;
        long metadata = sizeof(long) + (mask.Document ? sizeof(int) : 0);

        double compute = 0;
        double meanCompute = 0;
        double waiting = 0;
        double transfer = 0;
        for (int s = 0; s < schedule.Steps; s++)
        {
            double maxCompute = 0;
            double sumCompute = 0;
            double maxStep = 0;
            double maxTransfer = 0;
            for (int rank = 0; rank < nodes; rank++)
            {
                double c = schedule.Work(s, rank) * flopsPerWork / flops;
                double t = 0;
                if (s < schedule.Steps - 1)
                {
                    // The block that arrives during step s is the one the predecessor holds at step s.
                    int source = schedule.BlockSource(plan.RingOf(rank), s + 1);
                    (_, int kvHeads) = plan.KeyValueHeadsOf(plan.MemberOf(rank));
                    long rows = plan.RingShardTokens(source).Length;
                    t = latency + (rows * ((2.0 * kvHeads * headDim * elementSize) + metadata) / bytesPerSecond);
                }

                double step = Math.Max(c, t) + ((1 - hw.Overlap) * Math.Min(c, t));
                maxCompute = Math.Max(maxCompute, c);
                sumCompute += c;
                maxStep = Math.Max(maxStep, step);
                maxTransfer = Math.Max(maxTransfer, t);
            }

            compute += maxCompute;
            meanCompute += sumCompute / nodes;
            waiting += maxStep - maxCompute;
            transfer += maxTransfer;
        }

        (double scatter, double gather) = AllToAll(plan, headDim, elementSize, metadata, latency, bytesPerSecond);
        double overhead = (hw.LayerOverheadMicroseconds + (schedule.Steps * hw.StepOverheadMicroseconds)) * 1e-6;
        double layer = compute + waiting + scatter + gather + overhead;
        double ideal = schedule.TotalWork * flopsPerWork / hw.NodeFlopsPerSecond(1) / nodes;
        return new LayerPrediction(
            LayerMs: layer * 1e3,
            ComputeMs: compute * 1e3,
            MeanComputeMs: meanCompute * 1e3,
            WaitingMs: waiting * 1e3,
            AllToAllMs: (scatter + gather) * 1e3,
            TransferMs: transfer * 1e3,
            OverheadMs: overhead * 1e3,
            IdealMs: ideal * 1e3,
            Efficiency: ideal / layer,
            TokensPerSecond: plan.Tokens / layer,
            Imbalance: schedule.Imbalance,
            BytesSentMax: schedule.BytesSent.Max());
    }

    /// <summary>Seconds of the scatter and the gather all-to-all: the slowest rank's, each L + max(sent, received) / B; 0 without Ulysses.</summary>
    private static (double Scatter, double Gather) AllToAll(LayoutPlan plan, int headDim, int elementSize, long metadata, double latency, double bytesPerSecond)
    {
        int degree = plan.UlyssesDegree;
        if (degree == 1)
        {
            return (0, 0);
        }

        double scatter = 0;
        double gather = 0;
        for (int rank = 0; rank < plan.Shards; rank++)
        {
            UlyssesTraffic t = RingSchedule.Ulysses(plan, rank, headDim, elementSize, metadata);
            scatter = Math.Max(scatter, latency + (Math.Max(t.ScatterSent, t.ScatterReceived) / bytesPerSecond));
            gather = Math.Max(gather, latency + (Math.Max(t.GatherSent, t.GatherReceived) / bytesPerSecond));
        }

        return (scatter, gather);
    }
}
