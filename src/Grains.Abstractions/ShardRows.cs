namespace LongCluster.Contracts;

/// <summary>
/// Which rows of a chunk one shard receives: token offsets within the chunk as runs
/// <c>[start0, count0, start1, count1, …]</c>, in the order the shard stores them (its upload's row order).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ShardRows(int Index, string Endpoint, int Rows, int[] Runs)
{
    /// <summary>Copies this shard's rows (in its order) to their token positions in <paramref name="chunk"/>; <paramref name="rowBytes"/> per row.</summary>
    public void ToTokenOrder(ReadOnlySpan<byte> shard, Span<byte> chunk, int rowBytes)
    {
        int r = 0;
        for (int run = 0; run < Runs.Length; run += 2)
        {
            int count = Runs[run + 1];
            shard.Slice(r * rowBytes, count * rowBytes).CopyTo(chunk.Slice(Runs[run] * rowBytes));
            r += count;
        }
    }
}
