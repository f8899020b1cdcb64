namespace LongCluster.Kernels.Tests;

public sealed class AttentionMaskTests
{
    [Theory]
    [InlineData("full")]
    [InlineData("causal")]
    [InlineData("window:7")]
    [InlineData("prefix:0")]
    [InlineData("prefix:12")]
    [InlineData("document")]
    [InlineData("document-causal")]
    [InlineData("document-window:3")]
    [InlineData("document-prefix:4")]
    public void Parse_CanonicalText_RoundTrips(string text) => Assert.Equal(text, AttentionMask.Parse(text).ToString());

    [Theory]
    [InlineData("")]
    [InlineData("window:0")]
    [InlineData("window:")]
    [InlineData("window:-3")]
    [InlineData("prefix:x")]
    [InlineData("diagonal")]
    [InlineData("document-document")]
    public void Parse_Malformed_ThrowsListingForms(string text)
    {
        var error = Assert.Throws<FormatException>(() => AttentionMask.Parse(text));
        Assert.Contains("window:W", error.Message);
    }

    [Theory]
    [InlineData("causal", 5, 5, true)]
    [InlineData("causal", 5, 6, false)]
    [InlineData("window:3", 10, 8, true)]
    [InlineData("window:3", 10, 7, false)]
    [InlineData("prefix:4", 1, 3, true)]
    [InlineData("prefix:4", 1, 4, false)]
    [InlineData("prefix:4", 9, 9, true)]
    public void IsVisible_Definitions_Hold(string mask, long q, long k, bool expected) =>
        Assert.Equal(expected, AttentionMask.Parse(mask).IsVisible(q, k));

    [Fact]
    public void Classify_AgreesWithEveryElementOfRandomTiles()
    {
        // A tile called Hidden must have no visible pair and one called Visible no hidden pair.
        var random = new Random(7);
        string[] masks = ["full", "causal", "window:1", "window:9", "prefix:0", "prefix:30", "document", "document-causal", "document-window:5"];
        for (int trial = 0; trial < 3000; trial++)
        {
            var mask = AttentionMask.Parse(masks[trial % masks.Length]);
            long[] qp = Enumerable.Range(0, random.Next(1, 9)).Select(_ => (long)random.Next(0, 60)).ToArray();
            long[] kp = Enumerable.Range(0, random.Next(1, 9)).Select(_ => (long)random.Next(0, 60)).ToArray();
            int[] qd = qp.Select(p => (int)(p / 15)).ToArray();
            int[] kd = kp.Select(p => (int)(p / 15)).ToArray();
            TileVisibility visibility = mask.Classify(TileRange.Of(qp, qd), TileRange.Of(kp, kd));
            bool any = false;
            bool all = true;
            for (int i = 0; i < qp.Length; i++)
            {
                for (int j = 0; j < kp.Length; j++)
                {
                    bool visible = mask.IsVisible(qp[i], kp[j], qd[i], kd[j]);
                    any |= visible;
                    all &= visible;
                }
            }

            if (visibility == TileVisibility.Hidden)
            {
                Assert.False(any, $"{mask}: tile classified hidden has a visible pair");
            }

            if (visibility == TileVisibility.Visible)
            {
                Assert.True(all, $"{mask}: tile classified visible has a hidden pair");
            }
        }
    }

    [Theory]
    [InlineData("causal")]
    [InlineData("window:1")]
    [InlineData("window:13")]
    [InlineData("prefix:0")]
    [InlineData("prefix:17")]
    [InlineData("prefix:500")]
    public void CountLivePairs_ContiguousKeys_EqualsPairwiseCount(string text)
    {
        var mask = AttentionMask.Parse(text);
        long[] queries = TestData.Positions(60, 30);
        long[] keys = TestData.Positions(70, 10);
        long pairwise = 0;
        foreach (long q in queries)
        {
            pairwise += keys.Count(k => mask.IsVisible(q, k));
        }

        Assert.Equal(pairwise, mask.CountLivePairs(queries, keys));
        long[] strided = TestData.Positions(35, 10, 2);
        Assert.Equal(queries.Sum(q => strided.Count(k => mask.IsVisible(q, k))), mask.CountLivePairs(queries, strided));
        // Queries not ascending take the binary searches, ascending ones the two cursors: the same count.
        long[] descending = [.. queries.Reverse()];
        Assert.Equal(pairwise, mask.CountLivePairs(descending, keys));
        long[] stridedQueries = TestData.Positions(40, 3, 3);
        Assert.Equal(stridedQueries.Sum(q => strided.Count(k => mask.IsVisible(q, k))), mask.CountLivePairs(stridedQueries, strided));
    }

    [Theory]
    [InlineData("document")]
    [InlineData("document-causal")]
    [InlineData("document-window:6")]
    [InlineData("document-prefix:9")]
    public void CountLivePairs_SortedDocuments_EqualsPairwiseCount(string text)
    {
        var mask = AttentionMask.Parse(text);
        long[] queries = TestData.Positions(50, 3, 2);
        long[] keys = TestData.Positions(80, 0, 1);
        int[] qd = TestData.Documents(queries);
        int[] kd = TestData.Documents(keys);
        long pairwise = 0;
        for (int i = 0; i < queries.Length; i++)
        {
            for (int j = 0; j < keys.Length; j++)
            {
                pairwise += mask.IsVisible(queries[i], keys[j], qd[i], kd[j]) ? 1 : 0;
            }
        }

        Assert.Equal(pairwise, mask.CountLivePairs(queries, keys, qd, kd));
        long[] shuffled = keys.Reverse().ToArray();
        Assert.Equal(pairwise, mask.CountLivePairs(queries, shuffled, qd, kd.Reverse().ToArray()));
    }

    [Fact]
    public void CountLivePairs_Causal_IsTriangle()
    {
        long[] positions = TestData.Positions(100);
        Assert.Equal(5050, AttentionMask.Causal.CountLivePairs(positions, positions));
        Assert.Equal(10000, AttentionMask.Full.CountLivePairs(positions, positions));
    }
}
