using System.Runtime.Intrinsics;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

public sealed class AttentionForwardTests
{
    private const double F32Tolerance = 1e-4;

    public static readonly string[] Masks =
    [
        "full", "causal", "window:1", "window:5", "window:70", "prefix:0", "prefix:20", "document", "document-causal", "document-window:9",
    ];

    public static TheoryData<string, int, int, int> MaskGroupDim()
    {
        var data = new TheoryData<string, int, int, int>();
        (int Hq, int Hkv)[] groups = [(2, 2), (4, 2), (4, 1), (8, 1)];
        int[] dims = [1, 3, 64, 100, 128, 256];
        foreach (string mask in Masks)
        {
            foreach ((int hq, int hkv) in groups)
            {
                foreach (int d in dims)
                {
                    data.Add(mask, hq, hkv, d);
                }
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(MaskGroupDim))]
    public void Forward_EveryMaskGroupAndHeadDim_MatchesReference(string mask, int hq, int hkv, int d)
    {
        // 77 × 93 crosses a 64-key tile, and queries sit at the end of the keys as in chunked prefill.
        Check<float>(new AttentionShape(77, 93, hq, hkv, d), AttentionMask.Parse(mask), queryStart: 16, seed: d + hq);
    }

    public static TheoryData<int, int> Lengths() => new()
    {
        { 1, 1 }, { 1, 65 }, { 7, 9 }, { 8, 8 }, { 63, 64 }, { 64, 64 }, { 65, 65 }, { 127, 129 }, { 129, 127 }, { 200, 63 }, { 8, 200 }, { 130, 257 },
    };

    [Theory]
    [MemberData(nameof(Lengths))]
    public void Forward_LengthsAroundTileBoundaries_MatchReference(int tq, int tk)
    {
        foreach (string mask in new[] { "full", "causal", "window:33", "document-causal", "prefix:40" })
        {
            Check<float>(new AttentionShape(tq, tk, 4, 2, 64), AttentionMask.Parse(mask), queryStart: Math.Max(0, tk - tq), seed: tq * 1000 + tk);
        }
    }

    [Theory]
    [InlineData("causal")]
    [InlineData("full")]
    [InlineData("window:40")]
    [InlineData("document")]
    public void Forward_StripedPositions_MatchReference(string mask)
    {
        // A shard of a striped layout: every 3rd position, queries and keys interleaved with an offset.
        var shape = new AttentionShape(70, 90, 4, 1, 64);
        long[] qPositions = TestData.Positions(70, start: 1, stride: 3);
        long[] kPositions = TestData.Positions(90, start: 2, stride: 3);
        Check<float>(shape, AttentionMask.Parse(mask), qPositions, kPositions, seed: 5);
    }

    [Theory]
    [InlineData("causal")]
    [InlineData("window:50")]
    [InlineData("prefix:30")]
    public void Forward_KeysNotInPositionOrder_MatchReference(string mask)
    {
        // Keys in descending and then shuffled position order: partial tiles cannot be masked by one run of columns.
        var shape = new AttentionShape(90, 150, 4, 2, 32);
        long[] qPositions = TestData.Positions(90, start: 60);
        long[] descending = TestData.Positions(150, start: 149, stride: -1);
        Check<float>(shape, AttentionMask.Parse(mask), qPositions, descending, seed: 21);
        long[] shuffled = TestData.Positions(150);
        new Random(5).Shuffle(shuffled);
        Check<float>(shape, AttentionMask.Parse(mask), qPositions, shuffled, seed: 22);
    }

    [Theory]
    [InlineData(100f, F32Tolerance)]
    // Scores near 10³ carry an f32 rounding error near 10³ · 6e−8 ≈ 1e−4 before the softmax sees them, so no f32
    // kernel can promise 1e−4 here; this case is about overflow and NaN, checked at the bound the inputs allow.
    [InlineData(1000f, 1e-3)]
    public void Forward_LogitsScaledUp_NoOverflowAndMatchesReference(float factor, double tolerance)
    {
        var shape = new AttentionShape(70, 150, 4, 2, 64);
        Check<float>(shape, AttentionMask.Causal, TestData.Positions(70, 80), TestData.Positions(150), seed: 11, amplitude: MathF.Sqrt(factor), tolerance);
    }

    [Fact]
    public void Forward_RowsThatSeeNoKey_GetZeroOutputAndNegativeInfinityLse()
    {
        // Queries at positions 0..99, keys at 50..149: under causal the first 50 rows see nothing.
        var shape = new AttentionShape(100, 100, 2, 1, 16);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        long[] kPositions = TestData.Positions(100, 50);
        Attention.Forward<float>(q, k, v, shape, AttentionMask.Causal, new AttentionTokens(default, kPositions), o, lse);

        for (int t = 0; t < 100; t++)
        {
            for (int h = 0; h < 2; h++)
            {
                float rowLse = lse[(t * 2) + h];
                Span<float> row = o.AsSpan(((t * 2) + h) * 16, 16);
                if (t < 50)
                {
                    Assert.True(float.IsNegativeInfinity(rowLse), $"row {t} LSE {rowLse}");
                    Assert.All(row.ToArray(), x => Assert.Equal(0f, x));
                }
                else
                {
                    Assert.True(float.IsFinite(rowLse));
                    Assert.All(row.ToArray(), x => Assert.True(float.IsFinite(x)));
                }
            }
        }
    }

    [Fact]
    public void Forward_HiddenTiles_AreNeverRead()
    {
        // Keys 128.. are in the future of every query; poison them with NaN. A kernel that reads them, even to
        // multiply by zero, returns NaN.
        var shape = new AttentionShape(100, 256, 2, 2, 32);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        float[] poisonedK = (float[])k.Clone();
        float[] poisonedV = (float[])v.Clone();
        int firstHidden = 128 * 2 * 32;
        poisonedK.AsSpan(firstHidden).Fill(float.NaN);
        poisonedV.AsSpan(firstHidden).Fill(float.NaN);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Attention.Forward<float>(q, poisonedK, poisonedV, shape, AttentionMask.Causal, default, o, lse);

        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, AttentionMask.Causal, default);
        TestData.AssertClose(o, lse, refO, refLse, F32Tolerance, "poisoned future tiles");
    }

    [Theory]
    [InlineData("causal")]
    [InlineData("document-causal")]
    [InlineData("full")]
    public void Forward_F16Storage_MatchesReferenceOnRoundedInputs(string mask) =>
        Check<Half>(new AttentionShape(90, 130, 8, 2, 128), AttentionMask.Parse(mask), queryStart: 40, seed: 21);

    [Theory]
    [InlineData("causal")]
    [InlineData("window:17")]
    [InlineData("full")]
    public void Forward_BF16Storage_MatchesReferenceOnRoundedInputs(string mask) =>
        Check<BFloat16>(new AttentionShape(90, 130, 8, 2, 100), AttentionMask.Parse(mask), queryStart: 40, seed: 22);

    [Theory]
    [InlineData("causal", 4, 4)]
    [InlineData("document-causal", 8, 2)]
    [InlineData("window:50", 8, 1)]
    public void Forward_ThreadCount_DoesNotChangeOneBit(string mask, int hq, int hkv)
    {
        var shape = new AttentionShape(300, 300, hq, hkv, 64);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        long[] positions = TestData.Positions(300);
        int[] documents = TestData.Documents(positions);
        var parsed = AttentionMask.Parse(mask);
        float[]? firstO = null;
        float[]? firstLse = null;
        foreach (int threads in new[] { 1, 2, 3, 7 })
        {
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            Attention.Forward<float>(q, k, v, shape, parsed, new AttentionTokens(positions, positions, documents, documents), o, lse, new AttentionOptions { MaxThreads = threads });
            firstO ??= o;
            firstLse ??= lse;
            Assert.Equal(firstO, o);
            Assert.Equal(firstLse, lse);
        }
    }

    [Fact]
    public void Forward_ExplicitScale_IsUsed()
    {
        var shape = new AttentionShape(20, 40, 2, 1, 8);
        var options = new AttentionOptions { Scale = 0.9f };
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Attention.Forward<float>(q, k, v, shape, AttentionMask.Full, default, o, lse, options);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, AttentionMask.Full, default, options);
        TestData.AssertClose(o, lse, refO, refLse, F32Tolerance, "scale 0.9");
        (double[] defaultO, _) = AttentionReference.Forward<float>(q, k, v, shape, AttentionMask.Full, default);
        Assert.NotEqual(defaultO[0], refO[0]);
    }

    [Fact]
    public void Forward_ZeroKeys_EveryRowEmpty()
    {
        var shape = new AttentionShape(3, 0, 2, 1, 8);
        var o = new float[shape.QueryElements];
        o.AsSpan().Fill(5f);
        var lse = new float[shape.LseElements];
        Attention.Forward<float>(TestData.Random(1, shape.QueryElements), [], [], shape, AttentionMask.Causal, default, o, lse);
        Assert.All(o, x => Assert.Equal(0f, x));
        Assert.All(lse, x => Assert.True(float.IsNegativeInfinity(x)));
    }

    [Fact]
    public void Forward_HeadsNotAMultiple_ThrowsNamingBoth()
    {
        var shape = new AttentionShape(4, 4, 6, 4, 8);
        var error = Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[4 * 6 * 8], new float[4 * 4 * 8], new float[4 * 4 * 8], shape, AttentionMask.Full, default, new float[4 * 6 * 8], new float[24]));
        Assert.Contains("QueryHeads (6) must be a multiple of KeyValueHeads (4)", error.Message);
    }

    [Fact]
    public void Forward_WrongKeyLength_ThrowsWithExpectedShape()
    {
        var shape = new AttentionShape(4, 5, 2, 1, 8);
        var error = Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[64], new float[39], new float[40], shape, AttentionMask.Full, default, new float[64], new float[8]));
        Assert.Contains("key has 39 elements, expected [Tk, Hkv, d] = [5, 1, 8] = 40", error.Message);
    }

    [Fact]
    public void Forward_DocumentMaskWithoutIds_Throws()
    {
        var shape = new AttentionShape(4, 4, 1, 1, 8);
        var error = Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[32], new float[32], new float[32], shape, AttentionMask.Full.WithDocuments(), default, new float[32], new float[4]));
        Assert.Contains("QueryDocuments", error.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(257)]
    public void Forward_HeadDimOutOfRange_Throws(int d)
    {
        var shape = new AttentionShape(1, 1, 1, 1, d);
        var error = Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[d], new float[d], new float[d], shape, AttentionMask.Full, default, new float[d], new float[1]));
        Assert.Contains("HeadDim must be in 1..256", error.Message);
    }

    [Fact]
    public void FallbackRuns_EnvironmentDisablesVectors_VectorPathIsOff()
    {
        // The test command runs this project again with these variables; make sure they really select the fallbacks.
        if (Environment.GetEnvironmentVariable("DOTNET_EnableHWIntrinsic") == "0")
        {
            Assert.False(Vector128.IsHardwareAccelerated);
            Assert.False(Vector256.IsHardwareAccelerated);
        }
        else if (Environment.GetEnvironmentVariable("DOTNET_EnableAVX2") == "0")
        {
            Assert.False(Vector256.IsHardwareAccelerated);
            Assert.True(Vector128.IsHardwareAccelerated);
        }
        else
        {
            Assert.True(Vector256.IsHardwareAccelerated, "this machine has AVX2; the default run must take the Vector256 path");
        }
    }

    internal static void Check<T>(AttentionShape shape, AttentionMask mask, int queryStart, int seed, float amplitude = 1f)
        where T : unmanaged =>
        Check<T>(shape, mask, TestData.Positions(shape.QueryTokens, queryStart), TestData.Positions(shape.KeyTokens), seed, amplitude);

    internal static void Check<T>(AttentionShape shape, AttentionMask mask, long[] qPositions, long[] kPositions, int seed, float amplitude = 1f, double tolerance = F32Tolerance)
        where T : unmanaged
    {
        T[] q = TestData.Convert<T>(TestData.Random(seed, shape.QueryElements, amplitude));
        T[] k = TestData.Convert<T>(TestData.Random(seed + 1, shape.KeyValueElements, amplitude));
        T[] v = TestData.Convert<T>(TestData.Random(seed + 2, shape.KeyValueElements));
        int[] qDocs = TestData.Documents(qPositions);
        int[] kDocs = TestData.Documents(kPositions);
        var tokens = new AttentionTokens(qPositions, kPositions, qDocs, kDocs);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Attention.Forward<T>(q, k, v, shape, mask, tokens, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<T>(q, k, v, shape, mask, tokens);
        TestData.AssertClose(o, lse, refO, refLse, tolerance, $"{typeof(T).Name} {mask} {shape}");
    }
}
