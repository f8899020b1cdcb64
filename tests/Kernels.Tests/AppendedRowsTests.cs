using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Tests;

/// <summary>Decoded rows appended one at a time to a rank's KV: merged into few segments, attended exactly, each append undoable.</summary>
public sealed class AppendedRowsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(256)]
    [InlineData(300)]
    public void AppendOneRowAtATime_AttendEqualsReference_SegmentsStayFew(int appended)
    {
        const int Prefilled = 40, Hq = 4, Hkv = 2, D = 24;
        int total = Prefilled + appended;
        var shape = new AttentionShape(1, total, Hq, Hkv, D);
        float[] k = TestData.Random(2, shape.KeyValueElements);
        float[] v = TestData.Random(3, shape.KeyValueElements);
        float[] q = TestData.Random(1, shape.QueryElements);
        int row = Hkv * D;
        using var rank = new ContextParallelRank<float>(0, D);
        rank.Append([.. Enumerable.Range(0, Prefilled).Select(i => (long)i)], [], k[..(Prefilled * row)], v[..(Prefilled * row)]);
        for (int t = Prefilled; t < total; t++)
        {
            rank.Append([t], [], k[(t * row)..((t + 1) * row)], v[(t * row)..((t + 1) * row)]);
        }

        // 16 segments of one level merge into one: at most 15 per level, levels ≈ log16(appended), plus the prefilled one.
        int levels = (int)Math.Ceiling(Math.Log(appended + 1, ContextParallelRank<float>.AppendMergeWidth)) + 1;
        Assert.InRange(rank.SegmentCount, 1, 1 + (levels * (ContextParallelRank<float>.AppendMergeWidth - 1)) + 1);
        Assert.Equal(total, rank.StoredRows);

        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        long[] position = [total - 1];
        Assert.True(rank.AttendStored(q, position, [], Hq, Hkv, AttentionMask.Causal, AttentionOptions.Default, o, lse));
        long[] keys = [.. Enumerable.Range(0, total).Select(i => (long)i)];
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, AttentionMask.Causal, new AttentionTokens(position, keys));
        TestData.AssertClose(o, lse, refO, refLse, 1e-4, $"{appended} appended rows");
    }

    [Fact]
    public void Append_UndoToItsCount_RemovesExactlyThatRow_EvenWhenEarlierRowsMerged()
    {
        const int D = 8;
        using var rank = new ContextParallelRank<float>(0, D);
        for (int t = 0; t < 16; t++)
        {
            rank.Append([t], [], TestData.Random(t, D), TestData.Random(100 + t, D));
        }

        // The 17th append first merges the 16 before it, then adds its own row as the last segment.
        int undo = rank.Append([16], [], TestData.Random(16, D), TestData.Random(116, D));
        Assert.Equal((17L, 2), (rank.StoredRows, rank.SegmentCount));
        rank.Truncate(undo);
        Assert.Equal((16L, 1), (rank.StoredRows, rank.SegmentCount));
    }
}
