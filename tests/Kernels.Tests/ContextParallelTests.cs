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
    [InlineData("striped:3", 2, 8)]
    [InlineData("zigzag", 3, 2)]
    [InlineData("hybrid:2", 4, 2)]
    [InlineData("ulysses", 2, 8)]
    public async Task Prefill_RowsOutOfOrderAtOffsetPositions_BitIdenticalToTheRingOfForwardCalls(string layout, int shards, int hkv)
    {
        // Ranks read their rows straight out of the caller's tensors and write O back at the same offsets: rows that
        // are not one run (stripes, zigzag pairs), or whose heads other members computed, at positions that are not
        // 0..n−1, must land exactly where the same kernel calls, made one by one here, put them.
        int hq = 8;
        int tokens = 61;
        var mask = AttentionMask.Parse("document-causal");
        var shape = new AttentionShape(tokens, tokens, hq, hkv, HeadDim);
        float[] q = TestData.Random(7, shape.QueryElements);
        float[] k = TestData.Random(8, shape.KeyValueElements);
        float[] v = TestData.Random(9, shape.KeyValueElements);
        long[] positions = TestData.Positions(tokens, start: 1000, stride: 3);
        int[] documents = TestData.Documents(positions);
        var parsed = ContextLayout.Parse(layout);
        var plan = new LayoutPlan(parsed, shards, tokens, hq, hkv);
        if (plan.UlyssesDegree == 1)
        {
            // Ring layouts: some rank's rows are more than one run. (Ulysses members hold runs; their heads come back from the group.)
            Assert.Contains(Enumerable.Range(0, shards), r => plan.RankTokens(r)[^1] - plan.RankTokens(r)[0] >= plan.RankTokens(r).Length);
        }

        using var sequence = new ShardedSequence<float>(parsed, shards, hq, hkv, HeadDim, mask, new AttentionOptions { MaxThreads = 2 });
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        o.AsSpan().Fill(float.NaN);
        lse.AsSpan().Fill(float.NaN);
        await sequence.PrefillAsync(q, k, v, o, lse, positions, documents);

        (float[] expectedO, float[] expectedL) = RingOfForwardCalls(plan, mask, q, k, v, positions, documents);
        Assert.Equal(expectedO.Select(BitConverter.SingleToInt32Bits), o.Select(BitConverter.SingleToInt32Bits));
        Assert.Equal(expectedL.Select(BitConverter.SingleToInt32Bits), lse.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public async Task Dispose_AfterAChunk_RanksHoldNoKvAndTheSequenceRefusesMore()
    {
        var shape = new AttentionShape(40, 40, 4, 2, HeadDim);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] kv = TestData.Random(2, shape.KeyValueElements);
        var sequence = new ShardedSequence<float>(ContextLayout.Zigzag, 2, 4, 2, HeadDim, AttentionMask.Causal);
        await sequence.PrefillAsync(q, kv, kv, new float[shape.QueryElements], new float[shape.LseElements]);

        sequence.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => sequence.PrefillAsync(q, kv, kv, new float[shape.QueryElements], new float[shape.LseElements]));
    }

    /// <summary>
    /// What every rank computes, as separate single-node calls: for each ring shard and Ulysses member, its queries
    /// (that member's heads) against the ring's KV blocks in step order — own block first, then the one from the
    /// previous ring shard, and so on — skipping blocks the mask hides, merged by LSE; placed at the tokens' rows.
    /// </summary>
    private static (float[] Output, float[] LogSumExp) RingOfForwardCalls(
        LayoutPlan plan, AttentionMask mask, float[] q, float[] k, float[] v, long[] positions, int[] documents)
    {
        int d = HeadDim;
        int hq = plan.QueryHeads;
        int hkv = plan.KeyValueHeads;
        var output = new float[plan.Tokens * hq * d];
        var lse = new float[plan.Tokens * hq];
        var single = new AttentionOptions { MaxThreads = 1 };
        for (int ring = 0; ring < plan.RingDegree; ring++)
        {
            long[] rows = plan.RingShardTokens(ring).ToArray();
            long[] queryPositions = rows.Select(t => positions[t]).ToArray();
            int[] queryDocuments = rows.Select(t => documents[t]).ToArray();
            for (int member = 0; member < plan.UlyssesDegree; member++)
            {
                (int qFirst, int qHeads) = plan.QueryHeadsOf(member);
                (int kvFirst, int kvHeads) = plan.KeyValueHeadsOf(member);
                float[] query = HeadRows(q, rows, hq, qFirst, qHeads);
                var shape = new AttentionShape(rows.Length, 0, qHeads, kvHeads, d);
                var accO = new float[shape.QueryElements];
                var accL = new float[shape.LseElements];
                var partO = new float[shape.QueryElements];
                var partL = new float[shape.LseElements];
                bool computed = false;
                for (int s = 0; s < plan.RingDegree; s++)
                {
                    long[] keys = plan.RingShardTokens((((ring - s) % plan.RingDegree) + plan.RingDegree) % plan.RingDegree).ToArray();
                    long[] keyPositions = keys.Select(t => positions[t]).ToArray();
                    int[] keyDocuments = keys.Select(t => documents[t]).ToArray();
                    if (keys.Length == 0 || rows.Length == 0
                        || mask.Classify(TileRange.Of(queryPositions, queryDocuments), TileRange.Of(keyPositions, keyDocuments)) == TileVisibility.Hidden)
                    {
                        continue;
                    }

                    Attention.Forward<float>(
                        query, HeadRows(k, keys, hkv, kvFirst, kvHeads), HeadRows(v, keys, hkv, kvFirst, kvHeads), shape with { KeyTokens = keys.Length }, mask,
                        new AttentionTokens(queryPositions, keyPositions, queryDocuments, keyDocuments), computed ? partO : accO, computed ? partL : accL, single);
                    if (computed)
                    {
                        Attention.MergePartials(accO, accL, partO, partL, accO, accL, d);
                    }

                    computed = true;
                }

                if (!computed)
                {
                    accL.AsSpan().Fill(float.NegativeInfinity);
                }

                for (int i = 0; i < rows.Length; i++)
                {
                    accO.AsSpan(i * qHeads * d, qHeads * d).CopyTo(output.AsSpan((int)(((rows[i] * hq) + qFirst) * d)));
                    accL.AsSpan(i * qHeads, qHeads).CopyTo(lse.AsSpan((int)((rows[i] * hq) + qFirst)));
                }
            }
        }

        return (output, lse);
    }

    /// <summary>Heads [first, first + count) of the given token rows of a <c>[T, heads, d]</c> tensor, in row order.</summary>
    private static float[] HeadRows(float[] tensor, long[] rows, int heads, int first, int count)
    {
        var result = new float[rows.Length * count * HeadDim];
        for (int i = 0; i < rows.Length; i++)
        {
            tensor.AsSpan((int)(((rows[i] * heads) + first) * HeadDim), count * HeadDim).CopyTo(result.AsSpan(i * count * HeadDim));
        }

        return result;
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
