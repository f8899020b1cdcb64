using System.Runtime.Intrinsics;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

/// <summary>
/// Every vector path this process runs (Vector512 → Vector256 → Vector128 → scalar; test.sh runs the suite again
/// with AVX-512, AVX2 and all intrinsics off) against the float64 reference, around the 8- and 16-lane boundaries,
/// and the promise the kernels make: Vector512 and Vector256 give the same bits.
/// </summary>
public sealed class SimdPathTests
{
    private static readonly int[] HeadDims = [1, 15, 16, 17, 31, 33, 64, 100, 128, 256];

    public static TheoryData<string, int> LevelAndHeadDim()
    {
        var data = new TheoryData<string, int>();
        foreach (SimdLevel level in Simd.Available)
        {
            foreach (int d in HeadDims)
            {
                data.Add(level.ToString(), d);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(LevelAndHeadDim))]
    public void Forward_EveryPathAndHeadDim_MatchesReference(string path, int d)
    {
        SimdLevel level = Enum.Parse<SimdLevel>(path);
        // 47 query rows × G = 2 gives 94 stacked rows (6-row blocks and a 4-row rest), × G = 3 gives 141 (a 3-row
        // rest); 131 keys end in a ragged tile of 3; documents make partial tiles mask per element.
        foreach ((int hq, int hkv) in new[] { (4, 2), (3, 1) })
        {
            foreach (string mask in new[] { "full", "causal", "window:40", "document-causal" })
            {
                var shape = new AttentionShape(47, 131, hq, hkv, d);
                Run<float>(level, shape, AttentionMask.Parse(mask), Forward, 1e-4, seed: d);
            }
        }

        // Storage dtypes: the widening paths, checked on the rounded inputs.
        Run<BFloat16>(level, new AttentionShape(33, 70, 4, 2, d), AttentionMask.Causal, Forward, 1e-4, seed: d + 1);
        Run<Half>(level, new AttentionShape(33, 70, 4, 2, d), AttentionMask.Full, Forward, 1e-4, seed: d + 2);
    }

    [Theory]
    [MemberData(nameof(LevelAndHeadDim))]
    public void Decode_EveryPathAndHeadDim_MatchesReference(string path, int d)
    {
        SimdLevel level = Enum.Parse<SimdLevel>(path);
        // 2100 keys: two whole decode chunks and a ragged third whose last tile holds 52 keys.
        Run<float>(level, new AttentionShape(1, 2100, 8, 2, d), AttentionMask.Causal, Decode, 1e-4, seed: d);
        Run<BFloat16>(level, new AttentionShape(2, 2100, 6, 2, d), AttentionMask.Parse("document-causal"), Decode, 1e-4, seed: d + 1);
        Run<Half>(level, new AttentionShape(1, 1100, 4, 4, d), AttentionMask.Parse("window:700"), Decode, 1e-4, seed: d + 2);

        // Five chunks on one thread: each work item takes every KV head of its chunk (whole K/V rows).
        Run<BFloat16>(level, new AttentionShape(1, 4500, 8, 4, d), AttentionMask.Causal, Decode, 1e-4, seed: d + 3, threads: 1);
        Run<float>(level, new AttentionShape(2, 4500, 6, 3, d), AttentionMask.Parse("prefix:3000"), Decode, 1e-4, seed: d + 4, threads: 1);

        // The streamed path of Vector512 (blocks of 4 rows, the next tile's K and V asked for inside the loops): bf16
        // with 4 query heads a KV head, and 8 rows a head (two blocks); other paths compute the same shapes their way.
        Run<BFloat16>(level, new AttentionShape(1, 4500, 8, 2, d), AttentionMask.Causal, Decode, 1e-4, seed: d + 5, threads: 1);
        Run<BFloat16>(level, new AttentionShape(2, 4500, 8, 2, d), AttentionMask.Parse("window:3000"), Decode, 1e-4, seed: d + 6, threads: 1);
    }

    [Theory]
    [InlineData("full", 4, 2, 128)]
    [InlineData("causal", 4, 1, 64)]
    [InlineData("document-causal", 2, 2, 17)]
    [InlineData("causal", 6, 3, 33)]
    public void Forward_TilesPackedOnceOrPerItem_SameBitsAndMatchReference(string maskText, int hq, int hkv, int d)
    {
        // 301 query rows make several query tiles, so the call packs every visible K/V tile once and shares it: all
        // heads in one phase, or (a budget of two heads' tiles) in phases of two; a budget of 0 makes each item pack
        // its own.
        var shape = new AttentionShape(301, 333, hq, hkv, d);
        var mask = AttentionMask.Parse(maskText);
        (float[] q, float[] k, float[] v, long[] qPositions, long[] kPositions) = Inputs<float>(shape, seed: d);
        int[] qDocuments = TestData.Documents(qPositions);
        int[] kDocuments = TestData.Documents(kPositions);
        float[] Result(long budget)
        {
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            var tokens = new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments);
            Attention.Forward<float>(q, k, v, shape, mask, tokens, o, lse, new AttentionOptions { PackBudgetBytes = budget });
            (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, mask, tokens);
            TestData.AssertClose(o, lse, refO, refLse, 1e-4, $"budget {budget} {mask} {shape}");
            return [.. o, .. lse];
        }

        long oneHead = 6L * 2 * 64 * (((d + 7) / 8) * 8) * sizeof(float);   // 333 keys = 6 tiles of Kᵀ and V
        float[] shared = Result(64L << 20);
        Assert.Equal(shared, Result(2 * oneHead));
        Assert.Equal(shared, Result(0));
    }

    [Fact]
    public void Forward_Vector512AndVector256_SameBits()
    {
        if (!Simd.Available.Contains(SimdLevel.Vector512))
        {
            AssertCannotPin(SimdLevel.Vector512);
            return;
        }

        foreach (int d in HeadDims)
        {
            foreach (string mask in new[] { "full", "causal", "document-causal" })
            {
                var shape = new AttentionShape(47, 131, 6, 2, d);
                AssertSameBits<float>(shape, AttentionMask.Parse(mask), Forward, seed: d);
            }

            AssertSameBits<BFloat16>(new AttentionShape(40, 90, 4, 1, d), AttentionMask.Causal, Forward, seed: d);
        }
    }

    [Fact]
    public void Decode_Vector512AndVector256_SameBits()
    {
        if (!Simd.Available.Contains(SimdLevel.Vector512))
        {
            AssertCannotPin(SimdLevel.Vector512);
            return;
        }

        foreach (int d in HeadDims)
        {
            AssertSameBits<float>(new AttentionShape(1, 2100, 8, 2, d), AttentionMask.Causal, Decode, seed: d);
            AssertSameBits<BFloat16>(new AttentionShape(3, 1500, 4, 1, d), AttentionMask.Parse("window:900"), Decode, seed: d);

            // 6 rows per head (a block of 4 and 2 left over) and a last tile of 55 keys (13 blocks of 4 and 3 left over).
            AssertSameBits<BFloat16>(new AttentionShape(2, 2103, 6, 2, d), AttentionMask.Full, Decode, seed: d);

            // One thread, five chunks: every KV head of a chunk in one item, the streamed path on Vector512.
            AssertSameBits<BFloat16>(new AttentionShape(2, 4500, 8, 2, d), AttentionMask.Causal, Decode, seed: d, threads: 1);
        }
    }

    [Fact]
    public void Exp2_EveryWidth_SameBitsPerLane()
    {
        for (float x = -130f; x <= 130f; x += 0.0731f)
        {
            float v512 = Exp2.Vector(Vector512.Create(x))[9];
            float v256 = Exp2.Vector(Vector256.Create(x))[5];
            float v128 = Exp2.Vector(Vector128.Create(x))[2];
            Assert.Equal(BitConverter.SingleToInt32Bits(v256), BitConverter.SingleToInt32Bits(v512));
            Assert.Equal(BitConverter.SingleToInt32Bits(v256), BitConverter.SingleToInt32Bits(v128));
        }
    }

    [Fact]
    public void Options_PinningAPathThisProcessLacks_Throws()
    {
        foreach (SimdLevel level in Enum.GetValues<SimdLevel>().Where(l => !Simd.Available.Contains(l)))
        {
            AssertCannotPin(level);
        }

        // The best path is the widest available one, and pinning it is the default.
        Assert.Equal(Simd.Available[^1], Simd.Best);
        Assert.Equal(Simd.Best, new AttentionOptions().ResolveSimd());
    }

    private delegate void Kernel<T>(T[] q, T[] k, T[] v, AttentionShape shape, AttentionMask mask, AttentionTokens tokens, float[] o, float[] lse, AttentionOptions options)
        where T : unmanaged;

    private static void Forward<T>(T[] q, T[] k, T[] v, AttentionShape shape, AttentionMask mask, AttentionTokens tokens, float[] o, float[] lse, AttentionOptions options)
        where T : unmanaged => Attention.Forward<T>(q, k, v, shape, mask, tokens, o, lse, options);

    private static void Decode<T>(T[] q, T[] k, T[] v, AttentionShape shape, AttentionMask mask, AttentionTokens tokens, float[] o, float[] lse, AttentionOptions options)
        where T : unmanaged => Attention.Decode<T>(q, k, v, shape, mask, tokens, o, lse, options);

    private static void Run<T>(SimdLevel level, AttentionShape shape, AttentionMask mask, Kernel<T> kernel, double tolerance, int seed, int threads = 2)
        where T : unmanaged
    {
        (T[] q, T[] k, T[] v, long[] qPositions, long[] kPositions) = Inputs<T>(shape, seed);
        var tokens = new AttentionTokens(qPositions, kPositions, TestData.Documents(qPositions), TestData.Documents(kPositions));
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        kernel(q, k, v, shape, mask, tokens, o, lse, new AttentionOptions { Simd = level, MaxThreads = threads });
        (double[] refO, double[] refLse) = AttentionReference.Forward<T>(q, k, v, shape, mask, tokens);
        TestData.AssertClose(o, lse, refO, refLse, tolerance, $"{level} {typeof(T).Name} {mask} {shape}");
    }

    private static void AssertSameBits<T>(AttentionShape shape, AttentionMask mask, Kernel<T> kernel, int seed, int threads = 0)
        where T : unmanaged
    {
        (T[] q, T[] k, T[] v, long[] qPositions, long[] kPositions) = Inputs<T>(shape, seed);
        int[] qDocuments = TestData.Documents(qPositions);
        int[] kDocuments = TestData.Documents(kPositions);
        float[] Result(SimdLevel level)
        {
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            kernel(q, k, v, shape, mask, new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments), o, lse, new AttentionOptions { Simd = level, MaxThreads = threads });
            return [.. o, .. lse];
        }

        float[] wide = Result(SimdLevel.Vector512);
        float[] narrow = Result(SimdLevel.Vector256);
        int differing = wide.Zip(narrow).Count(pair => BitConverter.SingleToInt32Bits(pair.First) != BitConverter.SingleToInt32Bits(pair.Second));
        Assert.True(differing == 0, $"{typeof(T).Name} {mask} {shape}: {differing} of {wide.Length} values differ between Vector512 and Vector256");
    }

    private static (T[] Q, T[] K, T[] V, long[] QPositions, long[] KPositions) Inputs<T>(AttentionShape shape, int seed)
        where T : unmanaged
    {
        T[] q = TestData.Convert<T>(TestData.Random(seed, shape.QueryElements));
        T[] k = TestData.Convert<T>(TestData.Random(seed + 1, shape.KeyValueElements));
        T[] v = TestData.Convert<T>(TestData.Random(seed + 2, shape.KeyValueElements));

        // Queries are the last rows of the keys, as in a prefill chunk or a decode step.
        return (q, k, v, TestData.Positions(shape.QueryTokens, shape.KeyTokens - shape.QueryTokens), TestData.Positions(shape.KeyTokens));
    }

    private static void AssertCannotPin(SimdLevel level)
    {
        var shape = new AttentionShape(1, 1, 1, 1, 8);
        var error = Assert.Throws<ArgumentException>(() => Attention.Forward<float>(
            new float[8], new float[8], new float[8], shape, AttentionMask.Full, default, new float[8], new float[1], new AttentionOptions { Simd = level }));
        Assert.Contains($"{level}", error.Message);
    }
}
