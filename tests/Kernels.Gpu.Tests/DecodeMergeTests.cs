using LongCluster.Kernels.Backends;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Gpu.Tests;

[Collection(IlgpuCollection.Name)]
public sealed class DecodeMergeTests(BackendFixture fixture)
{
    private readonly IlgpuBackend _backend = fixture.Backend;

    [Theory]
    [InlineData("causal", 1, 600)]
    [InlineData("full", 2, 513)]
    [InlineData("window:300", 2, 700)]
    [InlineData("document-causal", 1, 600)]
    [InlineData("prefix:100", 3, 300)]
    public void Decode_KeysAcrossSeveralChunks_MatchReference(string mask, int tq, int tk)
    {
        // 256-key chunks: 513, 600 and 700 keys end in a ragged chunk; the query rows sit at the end of the keys.
        var shape = new AttentionShape(tq, tk, 4, 2, 24);
        Check<float>(shape, AttentionMask.Parse(mask), TestData.Positions(tq, tk - tq), TestData.Positions(tk), seed: tk);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(256)]
    public void Decode_HeadDims_MatchReference(int d) =>
        Check<float>(new AttentionShape(1, 300, 2, 1, d), AttentionMask.Causal, TestData.Positions(1, 299), TestData.Positions(300), seed: d);

    [Fact]
    public void Decode_F16AndBF16Storage_MatchReferenceOnRoundedInputs()
    {
        var shape = new AttentionShape(2, 400, 4, 1, 64);
        Check<Half>(shape, AttentionMask.Causal, TestData.Positions(2, 398), TestData.Positions(400), seed: 1);
        Check<BFloat16>(shape, AttentionMask.Causal, TestData.Positions(2, 398), TestData.Positions(400), seed: 2);
    }

    [Fact]
    public void Decode_ChunksTheRowCannotSee_GiveNegativeInfinityOnlyWhereNoKeyIsVisible()
    {
        // window:10 over 600 keys: two of three chunks are hidden for the last row; the first query row (position 0
        // under a key set starting at 100) sees nothing at all.
        var shape = new AttentionShape(2, 600, 1, 1, 8);
        var inputs = TestData.Make<float>(shape, [0, 699], TestData.Positions(600, 100), seed: 3);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Decode<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Window(10), inputs.Tokens, o, lse);
        Assert.True(float.IsNegativeInfinity(lse[0]));
        Assert.All(o.AsSpan(0, 8).ToArray(), x => Assert.Equal(0f, x));
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Window(10), inputs.Tokens);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "window:10 decode");
    }

    [Fact]
    public void Decode_SameAsCpuBackend_WithinReferenceTolerance()
    {
        var shape = new AttentionShape(2, 1100, 8, 2, 32);
        var inputs = TestData.Make<float>(shape, TestData.Positions(2, 1098), TestData.Positions(1100), seed: 4);
        var mask = AttentionMask.Parse("document-causal");
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Decode<float>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens, o, lse);
        var cpuO = new float[shape.QueryElements];
        var cpuLse = new float[shape.LseElements];
        CpuBackend.Instance.Decode<float>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens, cpuO, cpuLse);
        TestData.AssertClose(o, lse, cpuO.Select(x => (double)x).ToArray(), cpuLse.Select(x => (double)x).ToArray(), TestData.F32Tolerance, "ilgpu vs cpu decode");
    }

    [Fact]
    public void MergePartials_IncludingNegativeInfinitySides_MatchesCpuMerge()
    {
        // Rows: both finite, left −∞, right −∞, both −∞, and a large LSE gap.
        const int d = 5;
        float[] l1 = [0.3f, float.NegativeInfinity, 1.5f, float.NegativeInfinity, 40f];
        float[] l2 = [-0.7f, 2.0f, float.NegativeInfinity, float.NegativeInfinity, -3f];
        float[] o1 = TestData.Random(1, 5 * d);
        float[] o2 = TestData.Random(2, 5 * d);
        o1.AsSpan(1 * d, d).Clear();
        o1.AsSpan(3 * d, d).Clear();
        o2.AsSpan(2 * d, d).Clear();
        o2.AsSpan(3 * d, d).Clear();
        var o = new float[5 * d];
        var lse = new float[5];
        _backend.MergePartials(o1, l1, o2, l2, o, lse, d);
        var expectedO = new float[5 * d];
        var expectedLse = new float[5];
        Attention.MergePartials(o1, l1, o2, l2, expectedO, expectedLse, d);

        Assert.Equal(o1.AsSpan(2 * d, d).ToArray(), o.AsSpan(2 * d, d).ToArray());
        Assert.Equal(o2.AsSpan(1 * d, d).ToArray(), o.AsSpan(1 * d, d).ToArray());
        Assert.Equal(new float[d], o.AsSpan(3 * d, d).ToArray());
        Assert.True(float.IsNegativeInfinity(lse[3]));
        Assert.Equal(expectedLse[1], lse[1]);
        Assert.Equal(expectedLse[2], lse[2]);
        TestData.AssertClose(o, lse, expectedO.Select(x => (double)x).ToArray(), expectedLse.Select(x => (double)x).ToArray(), 1e-6, "merge");
    }

    [Fact]
    public void MergePartials_OfTwoKeyHalves_EqualsForwardOverAllKeys()
    {
        var shape = new AttentionShape(20, 60, 2, 1, 16);
        var inputs = TestData.Make<float>(shape, TestData.Positions(20, 40), TestData.Positions(60), seed: 5);
        var half = shape with { KeyTokens = 30 };
        int halfElements = (int)half.KeyValueElements;
        var o1 = new float[shape.QueryElements];
        var l1 = new float[shape.LseElements];
        var o2 = new float[shape.QueryElements];
        var l2 = new float[shape.LseElements];
        _backend.Forward<float>(inputs.Q, inputs.K.AsSpan(0, halfElements), inputs.V.AsSpan(0, halfElements), half, AttentionMask.Causal, new AttentionTokens(inputs.QueryPositions, inputs.KeyPositions.AsSpan(0, 30)), o1, l1);
        _backend.Forward<float>(inputs.Q, inputs.K.AsSpan(halfElements), inputs.V.AsSpan(halfElements), half, AttentionMask.Causal, new AttentionTokens(inputs.QueryPositions, inputs.KeyPositions.AsSpan(30)), o2, l2);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.MergePartials(o1, l1, o2, l2, o, lse, 16);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, "merged halves");
    }

    [Fact]
    public void MergePartials_BadLengths_SameErrorsAsCpu()
    {
        var cpu = Assert.Throws<ArgumentException>(() => CpuBackend.Instance.MergePartials(new float[10], new float[2], new float[9], new float[2], new float[10], new float[2], 5));
        var gpu = Assert.Throws<ArgumentException>(() => _backend.MergePartials(new float[10], new float[2], new float[9], new float[2], new float[10], new float[2], 5));
        Assert.Equal(cpu.Message, gpu.Message);
        var cpuDim = Assert.Throws<ArgumentOutOfRangeException>(() => CpuBackend.Instance.MergePartials([], [], [], [], [], [], 0));
        var gpuDim = Assert.Throws<ArgumentOutOfRangeException>(() => _backend.MergePartials([], [], [], [], [], [], 0));
        Assert.Equal(cpuDim.Message, gpuDim.Message);
    }

    private void Check<T>(AttentionShape shape, AttentionMask mask, long[] qPositions, long[] kPositions, int seed)
        where T : unmanaged
    {
        var inputs = TestData.Make<T>(shape, qPositions, kPositions, seed);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        _backend.Decode<T>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens, o, lse);
        (double[] refO, double[] refLse) = AttentionReference.Forward<T>(inputs.Q, inputs.K, inputs.V, shape, mask, inputs.Tokens);
        TestData.AssertClose(o, lse, refO, refLse, TestData.F32Tolerance, $"decode {typeof(T).Name} {mask} {shape}");
    }
}
