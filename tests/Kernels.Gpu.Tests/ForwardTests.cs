using LongCluster.Kernels.Backends;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Gpu.Tests;

[Collection(IlgpuCollection.Name)]
public sealed class ForwardTests(BackendFixture fixture)
{
    private readonly IlgpuBackend _backend = fixture.Backend;

    public static TheoryData<string> Masks() =>
    [
        "full", "causal", "window:1", "window:9", "prefix:0", "prefix:20",
        "document", "document-causal", "document-window:9", "document-prefix:20",
    ];

    [Theory]
    [MemberData(nameof(Masks))]
    public void Forward_EveryMask_MatchesReference(string mask)
    {
        // 37 × 45: ragged in both tile sizes (16 query rows, 64 keys at d = 17); queries at the end of the keys.
        var shape = new AttentionShape(37, 45, 4, 2, 17);
        Check<float>(shape, AttentionMask.Parse(mask), TestData.Positions(37, 8), TestData.Positions(45), seed: 1);
    }

    [Theory]
    [MemberData(nameof(Masks))]
    public void Forward_ShardLikeStripedPositions_MatchReference(string mask)
    {
        // A shard of a striped layout: every 3rd position, queries and keys interleaved with an offset.
        var shape = new AttentionShape(30, 40, 4, 1, 8);
        Check<float>(shape, AttentionMask.Parse(mask), TestData.Positions(30, start: 31, stride: 3), TestData.Positions(40, start: 2, stride: 3), seed: 2);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(64)]
    [InlineData(128)]
    [InlineData(256)]
    public void Forward_HeadDims_MatchReference(int d)
    {
        // Key tiles are 64, 32 and 8 keys for d ≤ 64, ≤ 128 and 256: 21 keys is ragged at every size.
        var shape = new AttentionShape(18, 21, 2, 1, d);
        Check<float>(shape, AttentionMask.Causal, TestData.Positions(18, 3), TestData.Positions(21), seed: d);
        Check<float>(shape, AttentionMask.Full, TestData.Positions(18, 3), TestData.Positions(21), seed: d + 1);
    }

    [Theory]
    [InlineData(4, 2)]
    [InlineData(4, 1)]
    [InlineData(3, 3)]
    public void Forward_GroupedQueryHeads_MatchReference(int hq, int hkv)
    {
        var shape = new AttentionShape(20, 33, hq, hkv, 16);
        Check<float>(shape, AttentionMask.Parse("document-causal"), TestData.Positions(20, 13), TestData.Positions(33), seed: hq * 10 + hkv);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(16, 64)]
    [InlineData(17, 65)]
    [InlineData(40, 9)]
    [InlineData(9, 130)]
    public void Forward_RaggedTiles_MatchReference(int tq, int tk)
    {
        var shape = new AttentionShape(tq, tk, 2, 2, 32);
        foreach (string mask in new[] { "causal", "window:20", "document-causal" })
        {
            Check<float>(shape, AttentionMask.Parse(mask), TestData.Positions(tq, Math.Max(0, tk - tq)), TestData.Positions(tk), seed: tq + tk);
        }
    }

    [Theory]
    [InlineData("causal")]
    [InlineData("document-causal")]
    [InlineData("full")]
    public void Forward_F16Storage_MatchesReferenceOnRoundedInputs(string mask) =>
        Check<Half>(new AttentionShape(30, 40, 4, 2, 64), AttentionMask.Parse(mask), TestData.Positions(30, 10), TestData.Positions(40), seed: 21);

    [Theory]
    [InlineData("causal")]
    [InlineData("window:17")]
    [InlineData("full")]
    public void Forward_BF16Storage_MatchesReferenceOnRoundedInputs(string mask) =>
        Check<BFloat16>(new AttentionShape(30, 40, 4, 2, 100), AttentionMask.Parse(mask), TestData.Positions(30, 10), TestData.Positions(40), seed: 22);

    [Fact]
    public void Forward_F16SubnormalsInfinityAndNaN_WidenExactly()
    {
        // One query row against single keys whose f16 bits are subnormal, the largest normal, inf and NaN: with a
        // zero query every score is 0, so O is the plain mean of the visible V rows, and the widening shows directly.
        var shape = new AttentionShape(1, 1, 1, 1, 4);
        Half[] values = [BitConverter.UInt16BitsToHalf(0x0001), BitConverter.UInt16BitsToHalf(0x83FF), Half.MaxValue, Half.NegativeInfinity];
        var o = new float[4];
        var lse = new float[1];
        _backend.Forward<Half>(new Half[4], new Half[4], values, shape, AttentionMask.Full, default, o, lse);
        Assert.Equal(new[] { 5.9604645e-8f, -6.097555e-5f, 65504f, float.NegativeInfinity }, o);
        Assert.Equal(0f, lse[0]);

        Half[] nan = [Half.NaN, Half.Zero, Half.Zero, Half.Zero];
        _backend.Forward<Half>(new Half[4], new Half[4], nan, shape, AttentionMask.Full, default, o, lse);
        Assert.True(float.IsNaN(o[0]));
    }

    [Fact]
    public void Forward_RowsThatSeeNoKey_GetZeroOutputAndNegativeInfinityLse()
    {
        // Queries at positions 0..39, keys at 20..59: under causal the first 20 rows see nothing.
        var shape = new AttentionShape(40, 40, 2, 1, 16);
        var inputs = TestData.Make<float>(shape, TestData.Positions(40), TestData.Positions(40, 20), seed: 3);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o, lse);
        for (int row = 0; row < 80; row++)
        {
            float[] values = o.AsSpan(row * 16, 16).ToArray();
            if (row < 40)
            {
                Assert.True(float.IsNegativeInfinity(lse[row]), $"row {row} LSE {lse[row]}");
                Assert.All(values, x => Assert.Equal(0f, x));
            }
            else
            {
                Assert.True(float.IsFinite(lse[row]), $"row {row} LSE {lse[row]}");
                Assert.All(values, x => Assert.True(float.IsFinite(x)));
            }
        }
    }

    [Fact]
    public void Forward_NoKeys_EveryRowIsEmpty()
    {
        var shape = new AttentionShape(3, 0, 1, 1, 4);
        var o = new float[12];
        o.AsSpan().Fill(7f);
        var lse = new float[3];
        _backend.Forward<float>(new float[12], [], [], shape, AttentionMask.Full, default, o, lse);
        Assert.All(o, x => Assert.Equal(0f, x));
        Assert.All(lse, x => Assert.Equal(float.NegativeInfinity, x));
    }

    [Fact]
    public void Forward_HiddenTiles_AreNeverRead()
    {
        // Keys 64.. are in the future of every query (positions 0..39); poison them with NaN. A kernel that reads a
        // hidden tile, even to multiply by zero, returns NaN.
        var shape = new AttentionShape(40, 128, 2, 2, 32);
        var inputs = TestData.Make<float>(shape, TestData.Positions(40), TestData.Positions(128), seed: 4);
        float[] poisonedK = (float[])inputs.K.Clone();
        float[] poisonedV = (float[])inputs.V.Clone();
        poisonedK.AsSpan(64 * 2 * 32).Fill(float.NaN);
        poisonedV.AsSpan(64 * 2 * 32).Fill(float.NaN);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Forward<float>(inputs.Q, poisonedK, poisonedV, shape, AttentionMask.Causal, inputs.Tokens, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "poisoned future tiles");
    }

    [Fact]
    public void Forward_ExplicitScale_IsUsed()
    {
        var shape = new AttentionShape(10, 20, 2, 1, 8);
        var options = new AttentionOptions { Scale = 0.9f };
        var inputs = TestData.Make<float>(shape, TestData.Positions(10, 10), TestData.Positions(20), seed: 5);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o, lse, options);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, options);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "scale 0.9");
    }

    [Theory]
    [InlineData("document-causal")]
    [InlineData("window:7")]
    public void Forward_SameAsCpuBackend_WithinReferenceTolerance(string mask)
    {
        var shape = new AttentionShape(25, 50, 4, 2, 24);
        var inputs = TestData.Make<BFloat16>(shape, TestData.Positions(25, 25), TestData.Positions(50), seed: 6);
        var parsed = AttentionMask.Parse(mask);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Forward<BFloat16>(inputs.Q, inputs.K, inputs.V, shape, parsed, inputs.Tokens, o, lse);
        var cpuO = new float[shape.QueryElements];
        var cpuLse = new float[shape.LseElements];
        CpuBackend.Instance.Forward<BFloat16>(inputs.Q, inputs.K, inputs.V, shape, parsed, inputs.Tokens, cpuO, cpuLse);
        TestData.AssertClose(o, lse, cpuO.Select(x => (double)x).ToArray(), cpuLse.Select(x => (double)x).ToArray(), TestData.F32Tolerance, $"ilgpu vs cpu {mask}");
    }

    [Fact]
    public void Forward_SameCallTwice_SameBits()
    {
        var shape = new AttentionShape(20, 30, 2, 1, 16);
        var inputs = TestData.Make<float>(shape, TestData.Positions(20, 10), TestData.Positions(30), seed: 7);
        var o1 = new float[shape.QueryElements];
        var l1 = new float[shape.LseElements];
        var o2 = new float[shape.QueryElements];
        var l2 = new float[shape.LseElements];
        _backend.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o1, l1);
        _backend.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o2, l2);
        Assert.Equal(o1, o2);
        Assert.Equal(l1, l2);
    }

    private void Check<T>(AttentionShape shape, AttentionMask mask, long[] qPositions, long[] kPositions, int seed)
        where T : unmanaged
    {
        var inputs = TestData.Make<T>(shape, qPositions, kPositions, seed);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Forward<T>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<T>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, $"{typeof(T).Name} {mask} {shape}");
    }
}
