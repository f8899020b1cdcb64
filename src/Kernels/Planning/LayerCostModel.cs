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
/// t(s, r) = L + rows · (2·Hkv_r·d·e + m) / B (none after the last step), and its own cores spend
/// x(s, r) = the same bytes / S moving the block through the transport (S = the profile's transport rate per node,
/// <see cref="HardwareProfile.NodeTransportBytesPerSecond"/>; x = 0 without one). The driver sends a block before
/// computing on it, so step s takes max_r [max(c + x, t) + (1 − overlap) · min(c + x, t)] + the profile's step
/// overhead. On a shared host whose nodes are pinned to cores (<see cref="HostCores"/>), the ring is simulated
/// instead: a rank's step is its kernel and transport work in core-seconds (F / <see cref="HardwareProfile.HostCores"/>
/// per core), served by its cores shared equally among the ranks pinned there that are computing at the time; step
/// s + 1 starts once step s is done and the predecessor's block, sent when its step s began, has arrived (t later).
/// No barrier between steps: a rank that finishes early leaves its core to its neighbour, as the driver's ranks
/// do.</item>
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
    public static LayerPrediction Predict(LayoutPlan plan, AttentionMask mask, int headDim, int elementSize, HardwareProfile hw, int documentLength = 0, HostCores? cores = null)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return Predict(RingSchedule.Create(plan, mask, headDim, elementSize, documentLength), mask, headDim, elementSize, hw, cores);
    }

    /// <summary>
    /// The prediction from a schedule already made (with the same mask, head dim and element size). With
    /// <paramref name="cores"/> (a <see cref="HardwareProfile.SharedHost"/> profile whose nodes are pinned processes),
    /// each rank computes on the cores it is pinned to, at <see cref="HardwareProfile.KernelGflops"/> /
    /// <see cref="HardwareProfile.HostCores"/> per core, sharing them with the other ranks pinned there while they
    /// compute, in a simulation of the ring without a barrier between steps (see the class remarks); without it, each
    /// of P nodes of a shared host gets 1/P of it.
    /// </summary>
    public static LayerPrediction Predict(RingSchedule schedule, AttentionMask mask, int headDim, int elementSize, HardwareProfile hw, HostCores? cores = null)
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
        double transportPerSecond = hw.NodeTransportBytesPerSecond(nodes);
        double latency = hw.LinkLatencyMicroseconds * 1e-6;
        double flopsPerWork = 4.0 * headDim;
        long metadata = sizeof(long) + (mask.Document ? sizeof(int) : 0);

        double compute = 0;
        double meanCompute = 0;
        double waiting = 0;
        double transfer = 0;
        if (cores is not null)
        {
            (compute, meanCompute, double ring, transfer) = PinnedRing(schedule, hw, cores, headDim, elementSize, metadata);
            waiting = ring - compute;
        }
        else
        {
            for (int s = 0; s < schedule.Steps; s++)
            {
                double maxCompute = 0;
                double sumCompute = 0;
                double maxStep = 0;
                double maxTransfer = 0;
                for (int rank = 0; rank < nodes; rank++)
                {
                    double c = schedule.Work(s, rank) * flopsPerWork / flops;
                    double bytes = IncomingBytes(schedule, s, rank, headDim, elementSize, metadata);
                    double t = bytes > 0 ? latency + (bytes / bytesPerSecond) : 0;
                    double busy = c + (bytes / transportPerSecond);
                    double step = Math.Max(busy, t) + ((1 - hw.Overlap) * Math.Min(busy, t));
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

    /// <summary>Bytes of the block rank <paramref name="rank"/> receives during step <paramref name="step"/> (the one its predecessor holds then); 0 at the last step.</summary>
    private static double IncomingBytes(RingSchedule schedule, int step, int rank, int headDim, int elementSize, long metadata)
    {
        if (step >= schedule.Steps - 1)
        {
            return 0;
        }

        LayoutPlan plan = schedule.Plan;
        int source = schedule.BlockSource(plan.RingOf(rank), step + 1);
        (_, int kvHeads) = plan.KeyValueHeadsOf(plan.MemberOf(rank));
        long rows = plan.RingShardTokens(source).Length;
        return rows * ((2.0 * kvHeads * headDim * elementSize) + metadata);
    }

    /// <summary>
    /// The ring on pinned cores, simulated: each rank goes through its steps as the driver does — step s + 1 starts
    /// when its step s is done and the block its predecessor sent at the start of its own step s has arrived (t after)
    /// — and a step's demand, its kernel work plus its transport work in core-seconds, is served by its cores, shared
    /// equally by the ranks pinned there that are computing at the time (the others wait). No barrier between steps:
    /// a rank that finishes early gives its core to its neighbour. Returns the slowest and the mean rank's time spent
    /// computing, the ring's wall time, and Σ over steps of the slowest transfer, in seconds.
    /// </summary>
    private static (double Compute, double MeanCompute, double Ring, double Transfer) PinnedRing(
        RingSchedule schedule, HardwareProfile hw, HostCores cores, int headDim, int elementSize, long metadata)
    {
        LayoutPlan plan = schedule.Plan;
        int nodes = plan.Shards;
        int steps = schedule.Steps;
        double coreFlops = CoreFlops(hw, cores, nodes);
        double coreTransport = hw.TransportGbitPerSecond > 0 ? hw.TransportGbitPerSecond * 1e9 / 8 / hw.HostCores : double.PositiveInfinity;
        double bytesPerSecond = hw.NodeBytesPerSecond(nodes);
        double latency = hw.LinkLatencyMicroseconds * 1e-6;
        if (hw.Overlap < 1)
        {
            throw new ArgumentException(
                $"profile '{hw.Name}' has overlap {hw.Overlap}: on pinned cores the model counts the cores' transport work itself (transportGbitPerSecond) and lets the link's time overlap (overlap 1)", nameof(hw));
        }

        var demand = new double[steps, nodes];
        var wire = new double[steps, nodes];
        double transfer = 0;
        for (int s = 0; s < steps; s++)
        {
            double maxTransfer = 0;
            for (int rank = 0; rank < nodes; rank++)
            {
                double bytes = IncomingBytes(schedule, s, rank, headDim, elementSize, metadata);
                demand[s, rank] = (schedule.Work(s, rank) * 4.0 * headDim / coreFlops) + (bytes / coreTransport);
                wire[s, rank] = bytes > 0 ? latency + (bytes / bytesPerSecond) : 0;
                maxTransfer = Math.Max(maxTransfer, wire[s, rank]);
            }

            transfer += maxTransfer;
        }

        int[] previous = [.. Enumerable.Range(0, nodes).Select(r => plan.RankAt((plan.RingOf(r) - 1 + plan.RingDegree) % plan.RingDegree, plan.MemberOf(r)))];
        var started = new double[steps, nodes];
        int[] step = new int[nodes];          // the step each rank is in (computing) or waits to start
        int[] begun = new int[nodes];         // steps each rank has started (its step-s block goes out when step s starts)
        bool[] computing = new bool[nodes];
        double[] remaining = new double[nodes];
        double[] busy = new double[nodes];    // wall time spent computing
        double[] done = new double[nodes];
        double now = 0;
        for (int rank = 0; rank < nodes; rank++)
        {
            computing[rank] = true;
            remaining[rank] = demand[0, rank];
            begun[rank] = 1;
        }

        int[] active = new int[cores.Groups];
        while (true)
        {
            // Ranks whose step is done move on (or wait for their next block); ranks whose block is there start.
            bool moved = true;
            while (moved)
            {
                moved = false;
                for (int rank = 0; rank < nodes; rank++)
                {
                    if (computing[rank] && remaining[rank] <= 0)
                    {
                        computing[rank] = false;
                        step[rank]++;
                        done[rank] = now;
                        moved = true;
                    }

                    int s = step[rank];
                    if (!computing[rank] && s < steps && begun[previous[rank]] >= s
                        && started[s - 1, previous[rank]] + wire[s - 1, rank] <= now)
                    {
                        computing[rank] = true;
                        started[s, rank] = now;
                        begun[rank] = s + 1;
                        remaining[rank] = demand[s, rank];
                        moved = true;
                    }
                }
            }

            Array.Clear(active);
            for (int rank = 0; rank < nodes; rank++)
            {
                active[cores.GroupOf(rank)] += computing[rank] ? 1 : 0;
            }

            double next = double.PositiveInfinity;
            for (int rank = 0; rank < nodes; rank++)
            {
                int s = step[rank];
                if (computing[rank])
                {
                    next = Math.Min(next, now + (remaining[rank] * active[cores.GroupOf(rank)] / cores.GroupCores(cores.GroupOf(rank))));
                }
                else if (s < steps && begun[previous[rank]] >= s)
                {
                    next = Math.Min(next, started[s - 1, previous[rank]] + wire[s - 1, rank]);
                }
            }

            if (double.IsPositiveInfinity(next))
            {
                break;
            }

            double dt = next - now;
            for (int rank = 0; rank < nodes; rank++)
            {
                if (computing[rank])
                {
                    int group = cores.GroupOf(rank);
                    double served = dt * cores.GroupCores(group) / active[group];
                    // The rank that set the event finishes exactly; rounding must not leave it a sliver of work.
                    remaining[rank] = remaining[rank] - served <= 1e-12 * Math.Max(1, served) ? 0 : remaining[rank] - served;
                    busy[rank] += dt;
                }
            }

            now = next;
        }

        if (step.Any(s => s < steps))
        {
            throw new InvalidOperationException("the ring simulation stopped with ranks short of their last step");
        }

        return (busy.Max(), busy.Average(), done.Max(), transfer);
    }

    /// <summary>FLOP/s of one core of a shared host whose <paramref name="nodes"/> nodes are pinned as <paramref name="cores"/> says.</summary>
    private static double CoreFlops(HardwareProfile hw, HostCores cores, int nodes)
    {
        if (!hw.SharedHost)
        {
            throw new ArgumentException($"pinned cores describe nodes on one host; profile '{hw.Name}' is not a shared host (sharedHost: false)", nameof(cores));
        }

        if (cores.Nodes != nodes)
        {
            throw new ArgumentException($"the pinning describes {cores.Nodes} nodes, the plan has {nodes}", nameof(cores));
        }

        if (hw.HostCores < 1)
        {
            throw new ArgumentException($"profile '{hw.Name}' does not say how many cores its kernelGflops counts (hostCores)", nameof(cores));
        }

        if (cores.Cores != hw.HostCores)
        {
            throw new ArgumentException($"the pinning is on a host of {cores.Cores} cores, profile '{hw.Name}' measured {hw.HostCores}", nameof(cores));
        }

        return hw.KernelGflops * 1e9 / hw.HostCores;
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
