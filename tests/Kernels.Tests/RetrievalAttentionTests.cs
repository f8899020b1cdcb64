using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

public sealed class RetrievalAttentionTests
{
    /// <summary>Small parameters: blocks of 8 after 4 init positions, a window of 16, chunks of 8, 2 of the evicted blocks chosen.</summary>
    private static readonly RetrievalRule Small = new() { Block = 8, Representatives = 2, TopK = 2, Init = 4, Local = 16, Chunk = 8 };

    public static TheoryData<int, int, int, int> Shapes()
    {
        var data = new TheoryData<int, int, int, int>();

        // Lengths around chunk and block edges (4 + 16 + 8k, ± 1), the first eviction (chunk at 32: J = 1) and
        // past it; heads MHA, GQA 4:2 and MQA 4:1; d under, at and past a vector.
        int[] lengths = [1, 7, 8, 9, 27, 28, 29, 33, 64, 95, 96, 97, 130];
        (int Hq, int Hkv, int D)[] heads = [(2, 2, 16), (4, 2, 8), (4, 1, 33)];
        foreach (int t in lengths)
        {
            foreach ((int hq, int hkv, int d) in heads)
            {
                data.Add(t, hq, hkv, d);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void Forward_F32LengthsAndHeads_MatchReference(int tokens, int hq, int hkv, int d) =>
        Check<float>(new AttentionShape(tokens, tokens, hq, hkv, d), Small, [], seed: tokens + (7 * hq) + d);

    [Theory]
    [InlineData(130, 4, 2, 16)]
    [InlineData(97, 4, 1, 8)]
    [InlineData(64, 2, 2, 33)]
    public void Forward_F16_MatchesReference(int tokens, int hq, int hkv, int d) =>
        Check<Half>(new AttentionShape(tokens, tokens, hq, hkv, d), Small, [], seed: tokens);

    [Theory]
    [InlineData(130, 4, 2, 16)]
    [InlineData(97, 4, 1, 8)]
    [InlineData(64, 2, 2, 33)]
    public void Forward_BF16_MatchesReference(int tokens, int hq, int hkv, int d) =>
        Check<BFloat16>(new AttentionShape(tokens, tokens, hq, hkv, d), Small, [], seed: tokens + 1);

    [Theory]
    [InlineData(new[] { 13, 1, 1, 30, 7, 1, 1, 60 })]
    [InlineData(new[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 50, 3, 3, 3, 3, 3, 3, 3, 3, 3 })]
    [InlineData(new[] { 40, 40, 40 })]
    public void Forward_SeveralRequests_MatchReferenceWithTheSameBoundaries(int[] requests)
    {
        int tokens = requests.Sum();
        Check<float>(new AttentionShape(tokens, tokens, 4, 2, 16), Small, requests, seed: tokens);
    }

    [Fact]
    public void Forward_RequestBoundaries_ChangeTheResult()
    {
        // Chunks restart at every request, so other boundaries mean other chunks and other choices.
        var shape = new AttentionShape(120, 120, 4, 2, 16);
        TestData.Inputs<float> x = TestData.Make<float>(shape, [], [], seed: 3);
        (float[] one, _) = Run(x, shape, Small, []);
        (float[] three, _) = Run(x, shape, Small, [37, 41, 42]);
        Assert.NotEqual(one, three);
    }

    [Theory]
    [InlineData(0, 16, 8)]
    [InlineData(4, 1, 1)]
    [InlineData(4, 0, 4)]
    [InlineData(0, 0, 1)]
    [InlineData(3, 5, 16)]
    public void Forward_EdgeParameters_MatchReference(int init, int local, int chunk)
    {
        // init 0, a window of 0 or 1 (a row can then see none of its own block), chunks of one row.
        var rule = Small with { Init = init, Local = local, Chunk = chunk };
        Check<float>(new AttentionShape(90, 90, 4, 2, 16), rule, [], seed: init + local + chunk);
    }

    [Fact]
    public void Forward_WholeBlockAsRepresentatives_MatchesReference()
    {
        Check<float>(new AttentionShape(100, 100, 2, 1, 16), Small with { Representatives = 8, TopK = 1 }, [], seed: 9);
    }

    [Theory]
    [InlineData(100, 16)]
    [InlineData(130, 13)]
    public void Forward_TopKAtLeastTheBlocks_EqualsCausal(int tokens, int topK)
    {
        // 100 tokens hold 12 whole blocks, fewer than topk 16; at 130 the last chunk (at 128) evicts 13, topk 13 keeps them all.
        var shape = new AttentionShape(tokens, tokens, 4, 2, 16);
        TestData.Inputs<float> x = TestData.Make<float>(shape, [], [], seed: tokens);
        var rule = Small with { TopK = topK };
        (float[] o, float[] lse) = Run(x, shape, rule, []);
        var causalO = new float[shape.QueryElements];
        var causalLse = new float[shape.LseElements];
        Attention.Forward<float>(x.Q, x.K, x.V, shape, AttentionMask.Causal, default, causalO, causalLse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(x.Q, x.K, x.V, shape, AttentionMask.Causal, default);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "retrieval with every block against the causal reference");
        Assert.True(Diff(o, causalO) <= 1e-5, $"against the causal kernel: {Diff(o, causalO):E2}");
        (double[] ruleO, double[] ruleLse) = RetrievalReference.Forward<float>(x.Q, x.K, x.V, shape, rule);
        Assert.True(Diff(ruleO, refO) <= 1e-12 && Diff(ruleLse, refLse) <= 1e-12, "the rule's reference with every block selected is the causal reference");
    }

    [Fact]
    public void Forward_ShortSequence_NothingEvicted_EqualsCausal()
    {
        // Under the default parameters nothing is evicted before position 128 + 4096 − 1 + 128.
        var shape = new AttentionShape(300, 300, 2, 1, 16);
        TestData.Inputs<Half> x = TestData.Make<Half>(shape, [], [], seed: 4);
        (float[] o, float[] lse) = Run(x, shape, new RetrievalRule(), []);
        (double[] refO, double[] refLse) = AttentionReference.Forward<Half>(x.Q, x.K, x.V, shape, AttentionMask.Causal, default);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "nothing evicted");
    }

    [Fact]
    public void Forward_BlocksEvicted_DiffersFromCausal()
    {
        // The cases above must exercise selection: from the chunk at 48 (J = 3 > topk 2) rows see fewer keys than causal.
        var shape = new AttentionShape(130, 130, 4, 2, 16);
        TestData.Inputs<float> x = TestData.Make<float>(shape, [], [], seed: 130);
        (float[] o, _) = Run(x, shape, Small, []);
        var causalO = new float[shape.QueryElements];
        Attention.Forward<float>(x.Q, x.K, x.V, shape, AttentionMask.Causal, default, causalO, new float[shape.LseElements]);
        int firstEvictingRow = 48 * shape.QueryHeads * shape.HeadDim;
        Assert.Equal(o.AsSpan(0, firstEvictingRow).ToArray(), causalO.AsSpan(0, firstEvictingRow).ToArray(), new ToleranceComparer(1e-5f));
        Assert.True(Diff(o, causalO) > 1e-2, $"max difference from causal only {Diff(o, causalO):E2}");
    }

    [Fact]
    public void Forward_DefaultParameters_MatchReference()
    {
        // The defaults past the first eviction of more than topk blocks: chunk 13 starts at 6656, J = 19 > 16.
        var shape = new AttentionShape(7168, 7168, 1, 1, 4);
        Check<BFloat16>(shape, new RetrievalRule(), [], seed: 12);
    }

    [Fact]
    public void Forward_Rerun_IdenticalBitsWhateverTheThreads()
    {
        var shape = new AttentionShape(130, 130, 4, 2, 33);
        TestData.Inputs<BFloat16> x = TestData.Make<BFloat16>(shape, [], [], seed: 8);
        (float[] o1, float[] l1) = Run(x, shape, Small, [50, 80], threads: 1);
        (float[] o2, float[] l2) = Run(x, shape, Small, [50, 80], threads: 2);
        (float[] o3, float[] l3) = Run(x, shape, Small, [50, 80], threads: 2);
        Assert.Equal(o1, o2);
        Assert.Equal(l1, l2);
        Assert.Equal(o2, o3);
        Assert.Equal(l2, l3);
    }

    public static TheoryData<string> Levels() => [.. Simd.Available.Select(l => l.ToString())];

    [Theory]
    [MemberData(nameof(Levels))]
    public void Forward_EveryVectorPath_MatchesReference(string levelName)
    {
        SimdLevel level = Enum.Parse<SimdLevel>(levelName);
        var shape = new AttentionShape(130, 130, 4, 2, 33);
        TestData.Inputs<BFloat16> x = TestData.Make<BFloat16>(shape, [], [], seed: 31);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        RetrievalAttention.Forward<BFloat16>(x.Q, x.K, x.V, shape, Small, [70, 1, 59], o, lse, new AttentionOptions { Simd = level });
        (double[] refO, double[] refLse) = RetrievalReference.Forward<BFloat16>(x.Q, x.K, x.V, shape, Small, [70, 1, 59]);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, $"{level}");
    }

    [Fact]
    public void Forward_BadArguments_RefusedNamingThem()
    {
        var shape = new AttentionShape(20, 20, 2, 1, 8);
        var q = new float[shape.QueryElements];
        var kv = new float[shape.KeyValueElements];
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Assert.Equal("requestRows", Assert.Throws<ArgumentException>(() => RetrievalAttention.Forward<float>(q, kv, kv, shape, Small, [10, 5], o, lse)).ParamName);
        Assert.Equal("requestRows", Assert.Throws<ArgumentException>(() => RetrievalAttention.Forward<float>(q, kv, kv, shape, Small, [20, 0], o, lse)).ParamName);
        Assert.Equal("topk", Assert.Throws<ArgumentException>(() => RetrievalAttention.Forward<float>(q, kv, kv, shape, Small with { TopK = 0 }, [], o, lse)).ParamName);
        var longerKeys = shape with { KeyTokens = 21 };
        var k21 = new float[longerKeys.KeyValueElements];
        Assert.Equal("shape", Assert.Throws<ArgumentException>(() => RetrievalAttention.Forward<float>(q, k21, k21, longerKeys, Small, [], o, lse)).ParamName);
        Assert.Equal("logSumExp", Assert.Throws<ArgumentException>(() => RetrievalAttention.Forward<float>(q, kv, kv, shape, Small, [], o, new float[3])).ParamName);
    }

    /// <summary>
    /// Block counts around the score tile (256 KiB of key sums: 64 blocks at Hkv 8 × d 128, 2048 at 1 × 32) and the
    /// groups of 4 within it, Hkv · d under and past a vector: every score against a float64 dot, and a block's score
    /// the same bits whether it is scored with the blocks after it or without.
    /// </summary>
    [Theory]
    [InlineData(8, 128, new[] { 1, 3, 4, 63, 64, 65, 67, 130, 259 })]
    [InlineData(1, 32, new[] { 5, 2047, 2048, 2049, 4103 })]
    [InlineData(3, 33, new[] { 1, 7, 700, 2001 })]
    public void ScoreBlocks_AcrossTiles_MatchFloat64AndIgnoreLaterBlocks(int hkv, int d, int[] counts)
    {
        var random = new Random(11);
        int row = hkv * d;
        float[] query = [.. Enumerable.Range(0, row).Select(_ => (float)((random.NextDouble() * 2) - 1))];
        float[] sums = [.. Enumerable.Range(0, counts.Max() * row).Select(_ => (float)((random.NextDouble() * 2) - 1))];
        float[] all = new float[hkv * counts.Max()];
        RetrievalAttention.ScoreBlocks(query, sums, hkv, d, all);
        foreach (int blocks in counts)
        {
            var scores = new float[hkv * blocks];
            RetrievalAttention.ScoreBlocks(query, sums.AsSpan(0, blocks * row), hkv, d, scores);
            for (int g = 0; g < hkv; g++)
            {
                for (int j = 0; j < blocks; j++)
                {
                    double expected = 0;
                    double magnitude = 0;
                    for (int c = 0; c < d; c++)
                    {
                        expected += (double)query[(g * d) + c] * sums[(j * row) + (g * d) + c];
                        magnitude += Math.Abs((double)query[(g * d) + c] * sums[(j * row) + (g * d) + c]);
                    }

                    float score = scores[(g * blocks) + j];
                    Assert.True(Math.Abs(score - expected) <= 1e-5 * magnitude, $"blocks {blocks}, head {g}, block {j}: {score} against {expected}");
                    if (j < blocks / 4 * 4)
                    {
                        Assert.Equal(BitConverter.SingleToInt32Bits(all[(g * counts.Max()) + j]), BitConverter.SingleToInt32Bits(score));
                    }
                }
            }
        }
    }

    [Fact]
    public void SelectTop_TiesToLowerIndex_AscendingOutput()
    {
        float[] scores = [1, 5, 3, 5, float.NaN, 2, 5, 4];
        var chosen = new int[3];
        Assert.Equal(3, RetrievalAttention.SelectTop(scores, 3, chosen));
        Assert.Equal([1, 3, 6], chosen);
        Assert.Equal(2, RetrievalAttention.SelectTop(scores, 2, chosen));
        Assert.Equal([1, 3], chosen.AsSpan(0, 2).ToArray());
        var all = new int[8];
        Assert.Equal(8, RetrievalAttention.SelectTop(scores, 100, all));
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], all);
        Assert.Equal(2, RetrievalAttention.SelectTop([float.NaN, 0f, float.NegativeInfinity], 2, chosen));
        Assert.Equal([0, 1], chosen.AsSpan(0, 2).ToArray());
    }

    [Fact]
    public void Representatives_MatchBruteForceWithTies()
    {
        // Keys 0 and 2 equal (a tie kept in position order), then the best by k · Σq; the sum is of the chosen keys.
        var shape = new AttentionShape(6, 6, 2, 1, 3);
        float[] q = [1, 0, 0, 1, 0, 0, /**/ 0, 1, 0, 0, 1, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 0];
        float[] k = [3, 0, 1, /**/ 0, 0, 9, /**/ 3, 0, 2, /**/ 1, 1, 0, /**/ -5, 0, 0, /**/ 2, 2, 0];
        var positions = new int[3];
        var keySum = new float[3];
        RetrievalAttention.Representatives<float>(q, k, shape, 3, positions, keySum);

        // Σq = (2, 2, 0): scores 6, 0, 6, 4, −10, 8 → rows 5, 0, 2.
        Assert.Equal([0, 2, 5], positions);
        Assert.Equal([8f, 2f, 3f], keySum);
    }

    [Theory]
    [InlineData(new[] { 33 })]
    [InlineData(new[] { 1, 7, 25 })]
    [InlineData(new[] { 16, 1, 1, 15 })]
    public void RepresentativesOfSum_QuerySumAddedInPieces_SameBitsAsWholeBlock(int[] pieces)
    {
        // A holder that gets a block's rows in several requests sums Q as they come: the same bits, the same choice.
        var shape = new AttentionShape(33, 33, 6, 2, 19);
        TestData.Inputs<BFloat16> x = TestData.Make<BFloat16>(shape, [], [], seed: 31);
        var positions = new int[2 * 5];
        var keySum = new float[2 * 19];
        RetrievalAttention.Representatives<BFloat16>(x.Q, x.K, shape, 5, positions, keySum);

        var sum = new float[2 * 19];
        int row = 0;
        foreach (int rows in pieces)
        {
            RetrievalAttention.AddQuerySum<BFloat16>(x.Q.AsSpan(row * 6 * 19, rows * 6 * 19), shape with { QueryTokens = rows, KeyTokens = rows }, sum);
            row += rows;
        }

        var piecePositions = new int[2 * 5];
        var pieceKeySum = new float[2 * 19];
        RetrievalAttention.RepresentativesOfSum<BFloat16>(sum, x.K, shape, 5, piecePositions, pieceKeySum);
        Assert.Equal(positions, piecePositions);
        Assert.Equal(keySum, pieceKeySum);
        Assert.Equal("querySum", Assert.Throws<ArgumentException>(() => RetrievalAttention.RepresentativesOfSum<BFloat16>(sum.AsSpan(1), x.K, shape, 5, piecePositions, pieceKeySum)).ParamName);
    }

    [Fact]
    public void AttendRanges_OneKvHeadOverRanges_MatchesFullMaskOnThoseKeys()
    {
        var shape = new AttentionShape(9, 70, 4, 2, 16);
        TestData.Inputs<float> x = TestData.Make<float>(shape, [], [], seed: 21);
        RowRange[] ranges = [new(0, 3), new(10, 1), new(20, 45)];
        var o = new float[9 * 2 * 16];
        var lse = new float[9 * 2];
        RetrievalAttention.AttendRanges<float>(x.Q, x.K, x.V, shape, 1, ranges, o, lse);

        // The same keys under a full mask, by position: the rest of the keys pushed out of reach.
        long[] keyPositions = [.. Enumerable.Range(0, 70).Select(j => ranges.Any(r => j >= r.Start && j < r.End) ? (long)j : 1000 + j)];
        long[] queryPositions = [.. Enumerable.Repeat(999L, 9)];
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(x.Q, x.K, x.V, shape, AttentionMask.Causal, new AttentionTokens(queryPositions, keyPositions));
        double[] headO = [.. Enumerable.Range(0, 9).SelectMany(t => refO.AsSpan(((t * 4) + 2) * 16, 2 * 16).ToArray())];
        double[] headLse = [.. Enumerable.Range(0, 9).SelectMany(t => refLse.AsSpan((t * 4) + 2, 2).ToArray())];
        TestData.AssertClose(o, lse, headO, headLse, TestData.F32Tolerance, "ranges of KV head 1");

        RetrievalAttention.AttendRanges<float>(x.Q, x.K, x.V, shape, 0, [], o, lse);
        Assert.All(lse, l => Assert.Equal(float.NegativeInfinity, l));
        Assert.All(o, v => Assert.Equal(0f, v));
        Assert.Equal("ranges", Assert.Throws<ArgumentException>(() => RetrievalAttention.AttendRanges<float>(x.Q, x.K, x.V, shape, 0, [new(5, 5), new(8, 2)], o, lse)).ParamName);
    }

    private static void Check<T>(AttentionShape shape, RetrievalRule rule, int[] requests, int seed)
        where T : unmanaged
    {
        TestData.Inputs<T> x = TestData.Make<T>(shape, [], [], seed);
        (float[] o, float[] lse) = Run(x, shape, rule, requests);
        (double[] refO, double[] refLse) = RetrievalReference.Forward<T>(x.Q, x.K, x.V, shape, rule, requests);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, $"{typeof(T).Name} {rule} {shape} requests [{string.Join(", ", requests)}]");
    }

    private static (float[] Output, float[] LogSumExp) Run<T>(TestData.Inputs<T> x, AttentionShape shape, RetrievalRule rule, int[] requests, int threads = 0)
        where T : unmanaged
    {
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        RetrievalAttention.Forward<T>(x.Q, x.K, x.V, shape, rule, requests, o, lse, new AttentionOptions { MaxThreads = threads });
        return (o, lse);
    }

    private static double Diff(float[] a, float[] b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Max();

    private static double Diff(double[] a, double[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    private sealed class ToleranceComparer(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance;

        public int GetHashCode(float obj) => 0;
    }
}
