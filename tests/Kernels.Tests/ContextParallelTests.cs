using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Tests;

public sealed class ContextParallelTests
{
    private const int HeadDim = 16;

    public static readonly string[] Layouts = ["contiguous", "striped", "striped:3", "zigzag", "ulysses", "hybrid:2"];

    public static readonly string[] Masks = ["full", "causal", "window:9", "prefix:21", "document", "document-causal"];

    public static TheoryData<string, string, int, int> Matrix()
    {
        var data = new TheoryData<string, string, int, int>();
        foreach (string layout in Layouts)
        {
            foreach (string mask in Masks)
            {
                foreach (int group in new[] { 1, 4 })
                {
                    foreach (int shards in new[] { 1, 2, 3, 4, 8 })
                    {
                        data.Add(layout, mask, group, shards);
                    }
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Matrix))]
    public async Task Prefill_EveryLayoutMaskGroupAndShardCount_EqualsSingleNode(string layout, string mask, int group, int shards)
    {
        // 8 query heads so Ulysses of degree 8 has a head each; GQA 4 has 2 KV heads (replicated when U > 2).
        int hq = 8;
        int hkv = hq / group;
        var parsedLayout = ContextLayout.Parse(layout);
        var parsedMask = AttentionMask.Parse(mask);
        if (!IsValid(parsedLayout, shards, hq, hkv))
        {
            Assert.Throws<ArgumentException>(() => new ShardedSequence<float>(parsedLayout, shards, hq, hkv, HeadDim, parsedMask));
            return;
        }

        foreach (int tokens in new[] { 96, 101 })
        {
            var shape = new AttentionShape(tokens, tokens, hq, hkv, HeadDim);
            float[] q = TestData.Random(1, shape.QueryElements);
            float[] k = TestData.Random(2, shape.KeyValueElements);
            float[] v = TestData.Random(3, shape.KeyValueElements);
            long[] positions = TestData.Positions(tokens);
            int[] documents = TestData.Documents(positions);
            var expectedO = new float[shape.QueryElements];
            var expectedL = new float[shape.LseElements];
            Attention.Forward<float>(q, k, v, shape, parsedMask, new AttentionTokens(positions, positions, documents, documents), expectedO, expectedL);

            var sequence = new ShardedSequence<float>(parsedLayout, shards, hq, hkv, HeadDim, parsedMask, new AttentionOptions { MaxThreads = 2 });
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            await sequence.PrefillAsync(q, k, v, o, lse, documents: documents);

            AssertSame(expectedO, expectedL, o, lse, $"{layout} {mask} G={group} P={shards} T={tokens}");
        }
    }

    [Theory]
    [InlineData("contiguous", "causal", 3)]
    [InlineData("zigzag", "causal", 4)]
    [InlineData("striped", "document-causal", 2)]
    [InlineData("ulysses", "causal", 4)]
    [InlineData("hybrid:2", "window:30", 4)]
    [InlineData("zigzag", "prefix:30", 8)]
    public async Task Prefill_InChunks_EqualsOneShot(string layout, string mask, int shards)
    {
        int hq = 8;
        int hkv = 2;
        int tokens = 150;
        var shape = new AttentionShape(tokens, tokens, hq, hkv, HeadDim);
        float[] q = TestData.Random(4, shape.QueryElements);
        float[] k = TestData.Random(5, shape.KeyValueElements);
        float[] v = TestData.Random(6, shape.KeyValueElements);
        int[] documents = TestData.Documents(TestData.Positions(tokens));
        var parsedMask = AttentionMask.Parse(mask);
        var oneShot = new ShardedSequence<float>(ContextLayout.Parse(layout), shards, hq, hkv, HeadDim, parsedMask);
        var expectedO = new float[shape.QueryElements];
        var expectedL = new float[shape.LseElements];
        await oneShot.PrefillAsync(q, k, v, expectedO, expectedL, documents: documents);

        var chunked = new ShardedSequence<float>(ContextLayout.Parse(layout), shards, hq, hkv, HeadDim, parsedMask);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        int qRow = hq * HeadDim;
        int kvRow = hkv * HeadDim;
        int start = 0;
        foreach (int size in new[] { 37, 1, 64, 48 })
        {
            await chunked.PrefillAsync(
                q.AsMemory(start * qRow, size * qRow),
                k.AsMemory(start * kvRow, size * kvRow),
                v.AsMemory(start * kvRow, size * kvRow),
                o.AsMemory(start * qRow, size * qRow),
                lse.AsMemory(start * hq, size * hq),
                documents: documents.AsMemory(start, size));
            start += size;
        }

        Assert.Equal(tokens, chunked.Length);
        AssertSame(expectedO, expectedL, o, lse, $"chunked {layout} {mask} P={shards}");
    }

    [Theory]
    [InlineData("contiguous", 4, 2, 3)]
    [InlineData("zigzag", 3, 1, 2)]
    [InlineData("ulysses", 4, 0, 1)]
    [InlineData("hybrid:2", 4, 3, 2)]
    public async Task Prefill_RankFailsMidRing_WholeRunFailsNamingRankAndStep(string layout, int shards, int failingRank, int failingSend)
    {
        var sequence = new ShardedSequence<float>(ContextLayout.Parse(layout), shards, 8, 2, HeadDim, AttentionMask.Causal)
        {
            ExchangeDecorator = inner => inner.Rank == failingRank ? new FailingExchange(inner, failingSend) : inner,
        };
        var shape = new AttentionShape(64, 64, 8, 2, HeadDim);
        var o = new float[shape.QueryElements];
        o.AsSpan().Fill(42f);
        var lse = new float[shape.LseElements];

        var error = await Assert.ThrowsAsync<ContextParallelException>(() => sequence.PrefillAsync(
            TestData.Random(1, shape.QueryElements), TestData.Random(2, shape.KeyValueElements), TestData.Random(3, shape.KeyValueElements), o, lse));

        Assert.Equal(failingRank, error.Rank);
        Assert.Contains($"rank {failingRank} failed at", error.Message);
        Assert.Contains("injected failure", error.Message);
        Assert.All(o, x => Assert.Equal(42f, x));
        await Assert.ThrowsAsync<InvalidOperationException>(() => sequence.PrefillAsync(new float[128], new float[32], new float[32], new float[128], new float[8]));
    }

    [Fact]
    public async Task Prefill_RankFailsMidRing_ErrorNamesTheRingStep()
    {
        var sequence = new ShardedSequence<float>(ContextLayout.Contiguous, 4, 4, 4, HeadDim, AttentionMask.Full)
        {
            ExchangeDecorator = inner => inner.Rank == 1 ? new FailingExchange(inner, 3) : inner,
        };
        var shape = new AttentionShape(40, 40, 4, 4, HeadDim);
        var error = await Assert.ThrowsAsync<ContextParallelException>(() => sequence.PrefillAsync(
            TestData.Random(1, shape.QueryElements), TestData.Random(2, shape.KeyValueElements), TestData.Random(3, shape.KeyValueElements), new float[shape.QueryElements], new float[shape.LseElements]));
        Assert.Equal("ring step 3 of 4", error.Step);
    }

    [Fact]
    public async Task Prefill_PeerGoesSilent_FailsWithTimeoutInsteadOfHanging()
    {
        var sequence = new ShardedSequence<float>(ContextLayout.Zigzag, 3, 4, 4, HeadDim, AttentionMask.Causal)
        {
            ReceiveTimeout = TimeSpan.FromMilliseconds(300),
            ExchangeDecorator = inner => inner.Rank == 0 ? new SilentExchange(inner) : inner,
        };
        var shape = new AttentionShape(30, 30, 4, 4, HeadDim);
        var error = await Assert.ThrowsAsync<ContextParallelException>(() => sequence.PrefillAsync(
            TestData.Random(1, shape.QueryElements), TestData.Random(2, shape.KeyValueElements), TestData.Random(3, shape.KeyValueElements), new float[shape.QueryElements], new float[shape.LseElements]));
        // Rank 1 waits on silent rank 0 first; rank 2, waiting on rank 1, may time out in the same timer tick.
        Assert.IsType<TimeoutException>(error.InnerException);
        Assert.Contains(error.Rank, new[] { 1, 2 });
        Assert.Contains($"no frame from rank {error.Rank - 1}", error.Message);
    }

    [Theory]
    [InlineData("full", 10)]
    [InlineData("prefix:30", 20)]
    [InlineData("document", 20)]
    public async Task Prefill_ChunkThatEarlierQueriesCouldSee_RefusedAndSequenceStillUsable(string mask, int firstChunk)
    {
        var parsed = AttentionMask.Parse(mask);
        var sequence = new ShardedSequence<float>(ContextLayout.Zigzag, 2, 2, 1, HeadDim, parsed);
        int[] documents = Enumerable.Repeat(0, 40).ToArray();
        float[] q = TestData.Random(1, 40 * 2 * HeadDim);
        float[] kv = TestData.Random(2, 40 * HeadDim);
        await sequence.PrefillAsync(q.AsMemory(0, firstChunk * 2 * HeadDim), kv.AsMemory(0, firstChunk * HeadDim), kv.AsMemory(0, firstChunk * HeadDim), new float[firstChunk * 2 * HeadDim], new float[firstChunk * 2], documents: documents.AsMemory(0, firstChunk));
        int rest = 40 - firstChunk;
        var error = await Assert.ThrowsAsync<ArgumentException>(() => sequence.PrefillAsync(
            q.AsMemory(firstChunk * 2 * HeadDim), kv.AsMemory(firstChunk * HeadDim), kv.AsMemory(firstChunk * HeadDim), new float[rest * 2 * HeadDim], new float[rest * 2], documents: documents.AsMemory(firstChunk)));
        Assert.Contains("queries of earlier chunks", error.Message);
        Assert.Equal(firstChunk, sequence.Length);
    }

    [Theory]
    [InlineData("ulysses", 3, 8, 2, "must divide the query heads")]
    [InlineData("ulysses", 4, 8, 6, "must be a positive multiple")]
    [InlineData("hybrid:2", 3, 8, 2, "multiple of the Ulysses degree")]
    [InlineData("hybrid:4", 4, 8, 8, "")]
    public void Plan_InvalidHeadsOrShards_ClearError(string layout, int shards, int hq, int hkv, string expected)
    {
        if (expected.Length == 0)
        {
            Assert.Equal(1, new LayoutPlan(ContextLayout.Parse(layout), shards, 10, hq, hkv).RingDegree);
            return;
        }

        var error = Assert.Throws<ArgumentException>(() => new LayoutPlan(ContextLayout.Parse(layout), shards, 10, hq, hkv));
        Assert.Contains(expected, error.Message);
    }

    [Theory]
    [InlineData("contiguous", 4, 10)]
    [InlineData("striped:2", 3, 17)]
    [InlineData("zigzag", 4, 37)]
    [InlineData("hybrid:2", 6, 50)]
    [InlineData("ulysses", 4, 7)]
    public void Plan_RankTokens_PartitionTheChunk(string layout, int shards, int tokens)
    {
        var plan = new LayoutPlan(ContextLayout.Parse(layout), shards, tokens, 8, 4);
        long[] all = Enumerable.Range(0, shards).SelectMany(r => plan.RankTokens(r).ToArray()).Order().ToArray();
        Assert.Equal(TestData.Positions(tokens), all);
    }

    [Fact]
    public void Plan_Zigzag_ShardOwnsChunkIAndMirror()
    {
        var plan = new LayoutPlan(ContextLayout.Zigzag, 2, 8, 1, 1);
        Assert.Equal([0L, 1, 6, 7], plan.RingShardTokens(0).ToArray());
        Assert.Equal([2L, 3, 4, 5], plan.RingShardTokens(1).ToArray());
    }

    [Theory]
    [InlineData("contigous")]
    [InlineData("striped:0")]
    [InlineData("hybrid")]
    [InlineData("zigzag:2")]
    public void Layout_Malformed_ThrowsListingForms(string text) =>
        Assert.Contains("contiguous, striped, striped:S, zigzag, ulysses, hybrid:U", Assert.Throws<FormatException>(() => ContextLayout.Parse(text)).Message);

    private static bool IsValid(ContextLayout layout, int shards, int hq, int hkv)
    {
        try
        {
            _ = new LayoutPlan(layout, shards, 0, hq, hkv);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static void AssertSame(float[] expectedO, float[] expectedL, float[] o, float[] lse, string context)
    {
        double maxRef = expectedO.Max(Math.Abs);
        for (int i = 0; i < o.Length; i++)
        {
            Assert.True(Math.Abs(o[i] - expectedO[i]) <= 1e-4 * maxRef, $"{context}: O[{i}] = {o[i]}, single node {expectedO[i]}");
        }

        for (int i = 0; i < lse.Length; i++)
        {
            if (float.IsNegativeInfinity(expectedL[i]))
            {
                Assert.True(float.IsNegativeInfinity(lse[i]), $"{context}: LSE[{i}] = {lse[i]}, single node -inf");
            }
            else
            {
                Assert.True(Math.Abs(lse[i] - expectedL[i]) <= 1e-4 * Math.Max(1, Math.Abs(expectedL[i])), $"{context}: LSE[{i}] = {lse[i]}, single node {expectedL[i]}");
            }
        }
    }

    /// <summary>Accepts sends and delivers nothing, as a peer whose link silently died.</summary>
    private sealed class SilentExchange(IExchange inner) : IExchange
    {
        public int Rank => inner.Rank;

        public int Size => inner.Size;

        public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken) => inner.ReceiveAsync(source, cancellationToken);
    }

    /// <summary>Throws on the n-th send, as a rank whose process dies or whose link breaks would.</summary>
    private sealed class FailingExchange(IExchange inner, int failOnSend) : IExchange
    {
        private int _sends;

        public int Rank => inner.Rank;

        public int Size => inner.Size;

        public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken) =>
            ++_sends == failOnSend
                ? throw new IOException($"injected failure on send {failOnSend} of rank {inner.Rank}")
                : inner.SendAsync(destination, frame, cancellationToken);

        public ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken) => inner.ReceiveAsync(source, cancellationToken);
    }
}
