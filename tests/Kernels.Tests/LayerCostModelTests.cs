using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;

namespace LongCluster.Kernels.Tests;

public sealed class LayerCostModelTests
{
    /// <summary>A dedicated-node profile with round figures for hand arithmetic.</summary>
    private static HardwareProfile Profile(double gflops = 1, double gbit = 1, double latencyUs = 100, double stepUs = 0, double layerUs = 0, double overlap = 1) => new()
    {
        Name = "test",
        KernelGflops = gflops,
        KernelSource = "test",
        LinkGbitPerSecond = gbit,
        LinkSource = "test",
        LinkLatencyMicroseconds = latencyUs,
        LatencySource = "test",
        StepOverheadMicroseconds = stepUs,
        LayerOverheadMicroseconds = layerUs,
        Overlap = overlap,
    };

    [Fact]
    public void Predict_ContiguousFullTwoNodes_MatchesHandArithmetic()
    {
        // T = 1024 on 2 nodes, contiguous, full mask, Hq = Hkv = 1, d = 64, f32; 1 GFLOP/s, 1 Gbit/s, 100 µs,
        // 10 µs per step, 500 µs per layer, overlap 1.
        // Each shard holds 512 tokens; each step each rank sees 512 · 512 = 262144 pairs × 1 head:
        //   c = 262144 · 4 · 64 FLOP / 1e9 FLOP/s = 67,108,864 ns = 67.108864 ms.
        // The block in flight during step 0: 512 rows · (2 · 1 · 64 · 4 + 8) B = 266,240 B; 1 Gbit/s = 1.25e8 B/s:
        //   t = 100 µs + 2.12992 ms = 2.22992 ms, hidden: step 0 = max(c, t) = c; step 1 has no transfer.
        // Layer = 2 · 67.108864 + 2 · 0.010 + 0.500 = 134.737728 ms; waiting 0; transfer 2.22992 ms.
        // Ideal = 1024² pairs · 256 FLOP / 1e9 / 2 = 134.217728 ms.
        var plan = new LayoutPlan(ContextLayout.Contiguous, 2, 1024, 1, 1);
        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Full, 64, 4, Profile(stepUs: 10, layerUs: 500));

        Assert.Equal(134.217728, p.ComputeMs, 9);
        Assert.Equal(134.217728, p.MeanComputeMs, 9);
        Assert.Equal(0, p.WaitingMs, 9);
        Assert.Equal(0, p.AllToAllMs, 9);
        Assert.Equal(2.22992, p.TransferMs, 9);
        Assert.Equal(0.52, p.OverheadMs, 9);
        Assert.Equal(134.737728, p.LayerMs, 9);
        Assert.Equal(134.217728, p.IdealMs, 9);
        Assert.Equal(134.217728 / 134.737728, p.Efficiency, 12);
        Assert.Equal(1024 / 0.134737728, p.TokensPerSecond, 6);
        Assert.Equal(266_240, p.BytesSentMax);
    }

    [Fact]
    public void Predict_NoOverlap_AddsTheTransferToTheStep()
    {
        // As above without overheads and with overlap 0: step 0 = c + t = 67.108864 + 2.22992 = 69.338784 ms,
        // step 1 = 67.108864 ms; waiting = 2.22992 ms.
        var plan = new LayoutPlan(ContextLayout.Contiguous, 2, 1024, 1, 1);
        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Full, 64, 4, Profile(overlap: 0));

        Assert.Equal(2.22992, p.WaitingMs, 9);
        Assert.Equal(136.447648, p.LayerMs, 9);
    }

    [Fact]
    public void Predict_UlyssesTwoNodes_CountsTheAllToAllFromTheShapes()
    {
        // T = 4 on 2 nodes, Ulysses (U = 2, one ring step), full mask, Hq = Hkv = 2, d = 2, f32; 1000 FLOP/s
        // (1e-6 GFLOP/s), 1000 B/s (8e-6 Gbit/s), 1 ms latency.
        // Rank 0 holds tokens 0, 1 and member 0's heads (q 0, kv 0); rank 1 tokens 2, 3 and heads q 1, kv 1.
        // Scatter: each sends its 2 rows of the other's heads, 2 · ((1 + 2 · 1) · 2 · 4 + 8) = 64 B, and receives as
        //   much: 1 ms + 64 ms = 65 ms.
        // Compute: 4 · 4 pairs × 1 head · 4 · 2 FLOP = 128 FLOP / 1000 = 128 ms.
        // Gather: each sends the other's 2 rows of its 1 head, 2 · 1 · (2 + 1) · 4 = 24 B: 1 ms + 24 ms = 25 ms.
        // Layer = 65 + 128 + 25 = 218 ms; ideal = 16 pairs · 2 heads · 8 FLOP / 1000 / 2 = 128 ms.
        var plan = new LayoutPlan(ContextLayout.Ulysses, 2, 4, 2, 2);
        RingSchedule schedule = RingSchedule.Create(plan, AttentionMask.Full, 2, 4);
        LayerPrediction p = LayerCostModel.Predict(schedule, AttentionMask.Full, 2, 4, Profile(gflops: 1e-6, gbit: 8e-6, latencyUs: 1000));

        Assert.Equal(128, p.ComputeMs, 9);
        Assert.Equal(90, p.AllToAllMs, 9);
        Assert.Equal(0, p.WaitingMs, 9);
        Assert.Equal(218, p.LayerMs, 9);
        Assert.Equal(128, p.IdealMs, 9);
        // The schedule's own traffic count agrees: 64 B scattered + 24 B gathered per rank.
        Assert.Equal(88, p.BytesSentMax);
        Assert.Equal(new long[] { 88, 88 }, schedule.BytesSent);
    }

    [Fact]
    public void Predict_TransportCost_AddsToEveryStepThatMovesABlock()
    {
        // As the first test, overheads 0, with the cores moving blocks at 8 Gbit/s = 1e9 B/s: step 0 moves the
        // 266,240-byte block, x = 0.26624 ms on top of its 67.108864 ms of compute (the link's 2.22992 ms still hides).
        var plan = new LayoutPlan(ContextLayout.Contiguous, 2, 1024, 1, 1);
        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Full, 64, 4, Profile() with { TransportGbitPerSecond = 8 });

        Assert.Equal(134.217728, p.ComputeMs, 9);
        Assert.Equal(0.26624, p.WaitingMs, 9);
        Assert.Equal(134.483968, p.LayerMs, 9);
    }

    /// <summary>A shared host of 2 cores at 1 GFLOP/s each, links that never bind, no transport cost.</summary>
    private static HardwareProfile TwoCoreHost() => Profile(gflops: 2, gbit: 1e9, latencyUs: 0) with { SharedHost = true, HostCores = 2 };

    [Theory]
    // T = 4096 causal on 4 contiguous shards of 1024, Hq = Hkv = 1, d = 64: a diagonal block is 1024·1025/2 = 524,800
    // live pairs, D = 524800 · 256 FLOP / 1e9 FLOP/s = 0.1343488 s on one core; a full one F = 0.268435456 s. Rank r
    // does D then r blocks of F. Two ranks per core, equal shares while both compute, no barrier between steps:
    // {0,3} and {1,2}: both cores finish at 2D + 3F (rank 3 alone for 3F after 2D; ranks 1 and 2 share F, then rank 2
    // alone for F) = 1074.003968 ms.
    [InlineData(new[] { 0, 1, 1, 0 }, 1074.003968)]
    // {0,2} and {1,3}: ranks 1 and 3 share D and F, then rank 3 alone for 2F: 2D + 4F = 1342.439424 ms.
    [InlineData(new[] { 0, 1, 0, 1 }, 1342.439424)]
    // {0,1} and {2,3}: ranks 2 and 3 share D, F and F, then rank 3 alone for F: 2D + 5F = 1610.87488 ms.
    [InlineData(new[] { 0, 0, 1, 1 }, 1610.87488)]
    public void Predict_PinnedCores_TwoRanksPerCoreShareItAndTheSecondKeepsItAlone(int[] coreOfRank, double layerMs)
    {
        var plan = new LayoutPlan(ContextLayout.Contiguous, 4, 4096, 1, 1);
        HostCores cores = HostCores.FromPinning(2, [.. coreOfRank.Select(c => (IReadOnlyCollection<int>)[c])]);

        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, TwoCoreHost(), cores: cores);

        Assert.Equal(layerMs, p.LayerMs, 6);
        // Rank 3 computes the whole time (alone or sharing): its computing time is the layer's.
        Assert.Equal(layerMs, p.ComputeMs, 6);
        Assert.Equal(0, p.WaitingMs, 6);
    }

    [Fact]
    public void Predict_PinnedCoresOnePerRank_SameAsDedicatedNodesOfOneCore()
    {
        // Two ranks on a core each of a 2-core host at 2 GFLOP/s: each rank has 1 GFLOP/s, as a dedicated node would.
        var plan = new LayoutPlan(ContextLayout.Zigzag, 2, 4096, 2, 1);
        HostCores cores = HostCores.FromPinning(2, [[0], [1]]);

        LayerPrediction pinned = LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, TwoCoreHost(), cores: cores);
        LayerPrediction dedicated = LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, Profile(gflops: 1, gbit: 1e9, latencyUs: 0));

        Assert.Equal(dedicated.LayerMs, pinned.LayerMs, 6);
        Assert.Equal(dedicated.ComputeMs, pinned.ComputeMs, 6);
    }

    [Fact]
    public void Predict_PinnedCores_ASlowLinkMakesTheNextStepWait()
    {
        // 2 contiguous shards of 512, full mask, Hq = Hkv = 1, d = 64, one core each (1 GFLOP/s): each step computes
        // 512² pairs, 67.108864 ms. The 266,240-byte block at 1e-3 Gbit/s (125,000 B/s) takes 2129.92 ms, sent when
        // step 0 starts: step 1 starts at 2129.92 ms and ends 67.108864 ms later.
        var plan = new LayoutPlan(ContextLayout.Contiguous, 2, 1024, 1, 1);
        HardwareProfile hw = Profile(gflops: 2, gbit: 1e-3, latencyUs: 0) with { SharedHost = true, HostCores = 2 };

        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Full, 64, 4, hw, cores: HostCores.FromPinning(2, [[0], [1]]));

        Assert.Equal(2129.92 + 67.108864, p.LayerMs, 6);
        Assert.Equal(2 * 67.108864, p.ComputeMs, 6);
        Assert.Equal(2129.92 - 67.108864, p.WaitingMs, 6);
    }

    [Fact]
    public void Predict_PinnedCoresWithoutWhatTheyNeed_Refused()
    {
        var plan = new LayoutPlan(ContextLayout.Zigzag, 2, 1024, 1, 1);
        HostCores cores = HostCores.FromPinning(2, [[0], [1]]);

        Assert.Contains("is not a shared host", Assert.Throws<ArgumentException>(() => LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, Profile(), cores: cores)).Message, StringComparison.Ordinal);
        Assert.Contains("(hostCores)", Assert.Throws<ArgumentException>(() => LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, TwoCoreHost() with { HostCores = 0 }, cores: cores)).Message, StringComparison.Ordinal);
        Assert.Contains("measured 4", Assert.Throws<ArgumentException>(() => LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, TwoCoreHost() with { HostCores = 4 }, cores: cores)).Message, StringComparison.Ordinal);
        Assert.Contains("describes 2 nodes, the plan has 4", Assert.Throws<ArgumentException>(() => LayerCostModel.Predict(new LayoutPlan(ContextLayout.Zigzag, 4, 1024, 1, 1), AttentionMask.Causal, 64, 4, TwoCoreHost(), cores: cores)).Message, StringComparison.Ordinal);
        Assert.Contains("has overlap 0.5", Assert.Throws<ArgumentException>(() => LayerCostModel.Predict(plan, AttentionMask.Causal, 64, 4, TwoCoreHost() with { Overlap = 0.5 }, cores: cores)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HostCoresFromPinning_SameSetsGroupDisjointOnesApartOverlapsRefused()
    {
        HostCores cores = HostCores.FromPinning(4, [[0, 1], [2], [1, 0], [3], [2]]);

        Assert.Equal(3, cores.Groups);
        Assert.Equal([0, 1, 0, 2, 1], Enumerable.Range(0, 5).Select(cores.GroupOf).ToArray());
        Assert.Equal([2, 1, 1], Enumerable.Range(0, 3).Select(cores.GroupCores).ToArray());
        Assert.Contains("node 1's cores {1,2} overlap another node's {0,1}", Assert.Throws<ArgumentException>(() => HostCores.FromPinning(4, [[0, 1], [1, 2]])).Message, StringComparison.Ordinal);
        Assert.Contains("node 0 is pinned to cores {4}: expected at least one core in 0..3", Assert.Throws<ArgumentException>(() => HostCores.FromPinning(4, [[4]])).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Predict_SharedHost_SplitsTheKernelRateAndTheLink()
    {
        // Same chunk as the first test on a shared host: each of 2 nodes gets 0.5 GFLOP/s, so compute doubles to
        // 268.435456 ms, and the ideal (single node / 2) stays 134.217728 ms: efficiency 1/2 at best.
        var plan = new LayoutPlan(ContextLayout.Contiguous, 2, 1024, 1, 1);
        LayerPrediction p = LayerCostModel.Predict(plan, AttentionMask.Full, 64, 4, Profile() with { SharedHost = true, LinkShared = true });

        Assert.Equal(268.435456, p.ComputeMs, 9);
        Assert.Equal(134.217728, p.IdealMs, 9);
        // The block's transfer at half the link: 100 µs + 2 · 2.12992 ms.
        Assert.Equal(4.35984, p.TransferMs, 9);
        Assert.Equal(0.5, p.Efficiency, 12);
    }

    [Fact]
    public void Predict_CausalFourNodes_ZigzagAtIdealContiguousImbalanced()
    {
        // Fast links: compute decides. Zigzag balances causal work (imbalance 1), contiguous does not (1.75: the
        // last shard works every step while the first idles after one).
        HardwareProfile hw = Profile(gflops: 100, gbit: 1e6, latencyUs: 0);
        LayerPrediction zigzag = LayerCostModel.Predict(new LayoutPlan(ContextLayout.Zigzag, 4, 4096, 8, 8), AttentionMask.Causal, 128, 4, hw);
        LayerPrediction contiguous = LayerCostModel.Predict(new LayoutPlan(ContextLayout.Contiguous, 4, 4096, 8, 8), AttentionMask.Causal, 128, 4, hw);

        Assert.Equal(zigzag.IdealMs, zigzag.LayerMs, 9);
        Assert.Equal(1.0, zigzag.Efficiency, 9);
        Assert.True(contiguous.LayerMs > 1.7 * zigzag.LayerMs, $"contiguous {contiguous.LayerMs} ms vs zigzag {zigzag.LayerMs} ms");
        Assert.Equal(contiguous.Imbalance, contiguous.LayerMs / contiguous.IdealMs, 9);
    }

    [Theory]
    [InlineData("zigzag", "causal")]
    [InlineData("striped", "causal")]
    [InlineData("contiguous", "full")]
    [InlineData("ulysses", "causal")]
    [InlineData("hybrid:2", "causal")]
    public void Predict_MoreBandwidthLessLatencyFasterKernel_NeverSlower(string layout, string mask)
    {
        var plan = new LayoutPlan(ContextLayout.Parse(layout), 8, 8192, 16, 8);
        AttentionMask parsed = AttentionMask.Parse(mask);
        RingSchedule schedule = RingSchedule.Create(plan, parsed, 128, 2);
        double previous = double.PositiveInfinity;
        foreach (double gbit in new[] { 0.1, 1, 10, 100, 400, 1600 })
        {
            foreach (double overlap in new[] { 0.0, 0.5, 1.0 })
            {
                double ms = LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000, gbit: gbit, overlap: overlap)).LayerMs;
                Assert.True(ms <= LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000, gbit: gbit, overlap: overlap - 0.5 < 0 ? 0 : overlap - 0.5)).LayerMs);
            }

            double layer = LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000, gbit: gbit)).LayerMs;
            Assert.True(layer <= previous, $"{gbit} Gbit/s: {layer} ms, slower than {previous} ms at less bandwidth");
            previous = layer;
        }

        Assert.True(
            LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000, latencyUs: 5)).LayerMs
            <= LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000, latencyUs: 50)).LayerMs);
        Assert.True(
            LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 2000)).LayerMs
            <= LayerCostModel.Predict(schedule, parsed, 128, 2, Profile(gflops: 1000)).LayerMs);
    }

    [Fact]
    public void Predict_SameInputs_SameNumbers()
    {
        var plan = new LayoutPlan(ContextLayout.Hybrid(2), 8, 10_000, 16, 4);
        HardwareProfile hw = HardwareProfile.Load("h200-400g");
        Assert.Equal(
            LayerCostModel.Predict(plan, AttentionMask.Causal, 128, 2, hw),
            LayerCostModel.Predict(plan, AttentionMask.Causal, 128, 2, hw));
    }

    [Fact]
    public void Choose_CausalOnOneNode_TieGoesToZigzag()
    {
        // On one node every layout is the same computation: a tie, broken toward the balanced layout.
        LayoutChoice choice = LayoutPlanner.Choose(1, new ChunkShape(2048, 8, 8, 64, 4, AttentionMask.Causal), Profile());
        Assert.Equal(ContextLayout.Zigzag, choice.Layout);
        Assert.All(choice.Candidates, c => Assert.Equal(choice.Prediction.LayerMs, c.Prediction!.LayerMs, 12));
    }

    [Fact]
    public void Choose_FullMaskRingLayoutsTie_ContiguousChosen()
    {
        // Full mask on 4 nodes: contiguous, zigzag and striped have the same pairs and blocks; the links hide the
        // blocks, so they tie and beat Ulysses (which adds its all-to-all).
        LayoutChoice choice = LayoutPlanner.Choose(4, new ChunkShape(8192, 8, 8, 128, 4, AttentionMask.Full), Profile(gflops: 100, gbit: 100, latencyUs: 5));
        Assert.Equal(ContextLayout.Contiguous, choice.Layout);
        double ring = choice.Prediction.LayerMs;
        Assert.Equal(ring, choice.Candidates.Single(c => c.Layout == ContextLayout.Zigzag).Prediction!.LayerMs, 12);
        Assert.Equal(ring, choice.Candidates.Single(c => c.Layout == ContextLayout.Striped()).Prediction!.LayerMs, 12);
        Assert.True(choice.Candidates.Single(c => c.Layout == ContextLayout.Ulysses).Prediction!.LayerMs > ring);
    }

    [Fact]
    public void Choose_CausalFourNodes_ZigzagBalanced()
    {
        LayoutChoice choice = LayoutPlanner.Choose(4, new ChunkShape(8192, 8, 8, 128, 4, AttentionMask.Causal), Profile(gflops: 100, gbit: 100, latencyUs: 5));
        Assert.Equal(ContextLayout.Zigzag, choice.Layout);
        Assert.Equal(
            new[] { ContextLayout.Zigzag, ContextLayout.Striped(), ContextLayout.Contiguous, ContextLayout.Hybrid(2), ContextLayout.Ulysses },
            choice.Candidates.Select(c => c.Layout));
    }

    [Fact]
    public void Evaluate_HeadsNotDivisibleOrTooFewTokens_SaysWhy()
    {
        // 8 tokens in zigzag's 32 pieces on 16 nodes: piece c holds a token only when c = 3 mod 4, and rank 1 holds
        // pieces 1 and 30.
        var chunk = new ChunkShape(8, 4, 4, 8, 4, AttentionMask.Causal);
        LayoutEvaluation ulysses = LayoutPlanner.Evaluate(ContextLayout.Ulysses, 8, chunk, Profile());
        LayoutEvaluation zigzag = LayoutPlanner.Evaluate(ContextLayout.Zigzag, 16, chunk, Profile());
        LayoutEvaluation hybrid = LayoutPlanner.Evaluate(ContextLayout.Hybrid(2), 1, chunk, Profile());

        Assert.False(ulysses.CanRun);
        Assert.Equal("layout ulysses: the Ulysses degree 8 must divide the query heads (4)", ulysses.Reason);
        Assert.Equal("8 tokens leave rank 1 idle (it needs at least 32)", zigzag.Reason);
        Assert.Equal("layout hybrid:2 needs the shard count (1) to be a multiple of the Ulysses degree 2", hybrid.Reason);
    }
}
