using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

public sealed class AttentionDecodeTests
{
    [Theory]
    [InlineData(1, 1, 8, 2, 128, "causal")]
    [InlineData(1, 2500, 8, 2, 128, "causal")]
    [InlineData(3, 2049, 4, 1, 100, "window:700")]
    [InlineData(2, 3000, 4, 4, 64, "document-causal")]
    [InlineData(1, 1500, 8, 8, 3, "full")]
    [InlineData(4, 1025, 2, 1, 256, "prefix:100")]
    [InlineData(5, 1101, 6, 2, 64, "causal")] // 15 rows a KV head: three blocks of 4 and 3 rows left over; 1101 keys: a tile of 13
    public void Decode_LongKeys_MatchesReference(int tq, int tk, int hq, int hkv, int d, string mask)
    {
        var shape = new AttentionShape(tq, tk, hq, hkv, d);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        long[] qPositions = TestData.Positions(tq, tk - tq);
        long[] kPositions = TestData.Positions(tk);
        var tokens = new AttentionTokens(qPositions, kPositions, TestData.Documents(qPositions), TestData.Documents(kPositions));
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        var parsed = AttentionMask.Parse(mask);
        Attention.Decode<float>(q, k, v, shape, parsed, tokens, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, parsed, tokens);
        TestData.AssertClose(o, lse, refO, refLse, 1e-4, $"decode {shape} {mask}");
    }

    [Fact]
    public void Decode_ThreadCount_DoesNotChangeOneBit()
    {
        // Five chunks: on one thread an item takes every KV head of a chunk, on more threads one head each.
        var shape = new AttentionShape(2, 5000, 8, 2, 64);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 5 })
        {
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            Attention.Decode<float>(q, k, v, shape, AttentionMask.Full, default, o, lse, new AttentionOptions { MaxThreads = threads });
            float[] both = [.. o, .. lse];
            first ??= both;
            Assert.Equal(first, both);
        }
    }

    [Theory]
    [InlineData("bf16", 1, 20000, 8, 2, 128, "window:5000")] // the first 14 chunks hidden: whole runs skipped, one run entered part way
    [InlineData("f32", 2, 17000, 4, 1, 64, "causal")]
    [InlineData("bf16", 1, 12345, 8, 8, 64, "full")] // G = 1: rows left over in every head; a last tile of 57 keys
    public void Decode_RunsOfChunks_MatchReferenceWhateverTheThreads(string dtype, int tq, int tk, int hq, int hkv, int d, string mask)
    {
        // 13 to 20 chunks: runs shrink from half of the chunks left on one thread (10, 5, 3, 1, 1 of 20) or a quarter
        // on two (5, 4, 3, 2, 2, 1, 1, 1, 1) down to one chunk; five threads take runs of 2 and 1 of all heads at 20
        // chunks, one chunk of one head below. The prefetch flows within a run, the partials stay per chunk: every
        // thread count gives the same bits, and they match the double-precision reference.
        if (dtype == "bf16")
        {
            RunsOfChunks<BFloat16>(tq, tk, hq, hkv, d, mask);
        }
        else
        {
            RunsOfChunks<float>(tq, tk, hq, hkv, d, mask);
        }
    }

    private static void RunsOfChunks<T>(int tq, int tk, int hq, int hkv, int d, string mask)
        where T : unmanaged
    {
        var shape = new AttentionShape(tq, tk, hq, hkv, d);
        T[] q = TestData.Convert<T>(TestData.Random(1, shape.QueryElements));
        T[] k = TestData.Convert<T>(TestData.Random(2, shape.KeyValueElements));
        T[] v = TestData.Convert<T>(TestData.Random(3, shape.KeyValueElements));
        var tokens = new AttentionTokens(TestData.Positions(tq, tk - tq), TestData.Positions(tk));
        var parsed = AttentionMask.Parse(mask);
        float[]? first = null;
        foreach (int threads in new[] { 1, 2, 5 })
        {
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            Attention.Decode<T>(q, k, v, shape, parsed, tokens, o, lse, new AttentionOptions { MaxThreads = threads });
            float[] both = [.. o, .. lse];
            if (first is null)
            {
                first = both;
                (double[] refO, double[] refLse) = AttentionReference.Forward<T>(q, k, v, shape, parsed, tokens);
                TestData.AssertClose(o, lse, refO, refLse, 1e-4, $"decode {typeof(T).Name} {shape} {mask}");
            }
            else
            {
                Assert.True(first.AsSpan().SequenceEqual(both), $"{threads} threads changed the bits of decode {typeof(T).Name} {shape} {mask}");
            }
        }
    }

    [Fact]
    public void Decode_F16Cache_MatchesReferenceOnRoundedInputs()
    {
        var shape = new AttentionShape(1, 1800, 8, 2, 128);
        Half[] q = TestData.Convert<Half>(TestData.Random(1, shape.QueryElements));
        Half[] k = TestData.Convert<Half>(TestData.Random(2, shape.KeyValueElements));
        Half[] v = TestData.Convert<Half>(TestData.Random(3, shape.KeyValueElements));
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Attention.Decode<Half>(q, k, v, shape, AttentionMask.Full, default, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<Half>(q, k, v, shape, AttentionMask.Full, default);
        TestData.AssertClose(o, lse, refO, refLse, 1e-4, "f16 decode");
    }
}
