namespace LongCluster.Kernels.Tests;

public sealed class AttentionMergeTests
{
    [Theory]
    [InlineData("full", 1)]
    [InlineData("causal", 37)]
    [InlineData("window:20", 64)]
    [InlineData("document-causal", 100)]
    public void MergePartials_TwoKeyHalves_EqualsWholeAttention(string mask, int split)
    {
        var shape = new AttentionShape(50, 160, 4, 2, 40);
        var parsed = AttentionMask.Parse(mask);
        float[] q = TestData.Random(1, shape.QueryElements);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        long[] qPositions = TestData.Positions(50, 110);
        long[] kPositions = TestData.Positions(160);
        int[] qDocs = TestData.Documents(qPositions);
        int[] kDocs = TestData.Documents(kPositions);

        (float[] o1, float[] l1) = Part(0, split);
        (float[] o2, float[] l2) = Part(split, 160 - split);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        Attention.MergePartials(o1, l1, o2, l2, o, lse, shape.HeadDim);

        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, parsed, new AttentionTokens(qPositions, kPositions, qDocs, kDocs));
        TestData.AssertClose(o, lse, refO, refLse, 1e-4, $"merge {mask} at {split}");

        (float[], float[]) Part(int start, int count)
        {
            int stride = shape.KeyValueHeads * shape.HeadDim;
            var partShape = shape with { KeyTokens = count };
            var po = new float[shape.QueryElements];
            var pl = new float[shape.LseElements];
            Attention.Forward<float>(
                q,
                k.AsSpan(start * stride, count * stride),
                v.AsSpan(start * stride, count * stride),
                partShape,
                parsed,
                new AttentionTokens(qPositions, kPositions.AsSpan(start, count), qDocs, kDocs.AsSpan(start, count)),
                po,
                pl);
            return (po, pl);
        }
    }

    [Fact]
    public void MergePartials_EmptySide_ReturnsOtherExactlyAndBothEmptyGivesZero()
    {
        float[] o1 = [1f, 2f, 3f, 4f];
        float[] l1 = [0.5f, float.NegativeInfinity];
        float[] o2 = [9f, 9f, 0f, 0f];
        float[] l2 = [float.NegativeInfinity, float.NegativeInfinity];
        var o = new float[4];
        var lse = new float[2];
        Attention.MergePartials(o1, l1, o2, l2, o, lse, 2);
        Assert.Equal([1f, 2f, 0f, 0f], o);
        Assert.Equal(0.5f, lse[0]);
        Assert.True(float.IsNegativeInfinity(lse[1]));
    }

    [Fact]
    public void MergePartials_InPlaceIntoFirst_SameAsSeparateDestination()
    {
        float[] o1 = TestData.Random(1, 300);
        float[] l1 = TestData.Random(2, 10, 5f);
        float[] o2 = TestData.Random(3, 300);
        float[] l2 = TestData.Random(4, 10, 5f);
        var o = new float[300];
        var lse = new float[10];
        Attention.MergePartials(o1, l1, o2, l2, o, lse, 30);
        Attention.MergePartials(o1, l1, o2, l2, o1, l1, 30);
        Assert.Equal(o, o1);
        Assert.Equal(lse, l1);
    }

    [Fact]
    public void MergePartials_LengthMismatch_Throws()
    {
        var error = Assert.Throws<ArgumentException>(() => Attention.MergePartials(new float[8], new float[2], new float[6], new float[2], new float[8], new float[2], 4));
        Assert.Contains("output2 has 6 elements", error.Message);
    }
}
