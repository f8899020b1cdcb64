namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// One rank's view of a chunk: the caller's tensors in the caller's row order and the rows that are this rank's.
/// The rank reads its rows once, in its own task, straight into its KV segment and pooled scratch, and writes its O
/// and LSE rows back at the same row offsets. Ranks of one chunk own disjoint rows, so they share one view's
/// memory and write one output without a lock. The caller keeps the memory alive and the inputs unchanged until
/// the rank's call completes, and the outputs must not overlap the inputs (a rank whose rows are one run reads Q in
/// place); if the call fails, the output may hold some of the rank's rows, and none of them is a result.
/// </summary>
/// <param name="Query">Q <c>[N, Hq, d]</c> for the N rows of the view.</param>
/// <param name="Key">K <c>[N, Hkv, d]</c>.</param>
/// <param name="Value">V <c>[N, Hkv, d]</c>.</param>
/// <param name="Positions">Global position of each row, <c>[N]</c>.</param>
/// <param name="Documents">Document id of each row, <c>[N]</c>, or empty when the mask has no documents.</param>
/// <param name="Rows">Offsets (0..N−1) of this rank's rows in the order the rank takes them: its tokens, ascending.</param>
/// <param name="Output">O <c>[N, Hq, d]</c>; the rank writes its rows.</param>
/// <param name="LogSumExp">LSE <c>[N, Hq]</c>; the rank writes its rows.</param>
public readonly record struct RankView<T>(
    ReadOnlyMemory<T> Query,
    ReadOnlyMemory<T> Key,
    ReadOnlyMemory<T> Value,
    ReadOnlyMemory<long> Positions,
    ReadOnlyMemory<int> Documents,
    ReadOnlyMemory<long> Rows,
    Memory<float> Output,
    Memory<float> LogSumExp)
    where T : unmanaged
{
    /// <summary>A view whose rows are all the rank's, in order (a shard that was sent only its own rows).</summary>
    public static RankView<T> AllRows(
        ReadOnlyMemory<T> query, ReadOnlyMemory<T> key, ReadOnlyMemory<T> value, ReadOnlyMemory<long> positions, ReadOnlyMemory<int> documents, Memory<float> output, Memory<float> logSumExp)
    {
        var rows = new long[positions.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i] = i;
        }

        return new RankView<T>(query, key, value, positions, documents, rows, output, logSumExp);
    }

    /// <summary>The first of the rank's rows when they are consecutive rows of the view (0 when there are none), else −1.</summary>
    internal int FirstRowOfOneRun()
    {
        ReadOnlySpan<long> rows = Rows.Span;
        for (int i = 1; i < rows.Length; i++)
        {
            if (rows[i] != rows[0] + i)
            {
                return -1;
            }
        }

        return rows.IsEmpty ? 0 : (int)rows[0];
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless every tensor has N rows of its shape and every row offset is below N.</summary>
    internal void Validate(int queryHeads, int keyValueHeads, int headDim)
    {
        long n = Positions.Length;
        Check(Query.Length, n * queryHeads * headDim, nameof(Query));
        Check(Key.Length, n * keyValueHeads * headDim, nameof(Key));
        Check(Value.Length, n * keyValueHeads * headDim, nameof(Value));
        Check(Output.Length, n * queryHeads * headDim, nameof(Output));
        Check(LogSumExp.Length, n * queryHeads, nameof(LogSumExp));
        if (!Documents.IsEmpty)
        {
            Check(Documents.Length, n, nameof(Documents));
        }

        foreach (long row in Rows.Span)
        {
            if (row < 0 || row >= n)
            {
                throw new ArgumentException($"row offset {row} is outside the view's {n} rows", nameof(Rows));
            }
        }
    }

    private static void Check(int actual, long expected, string name)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"{name} has {actual} elements, expected {expected} for the view's rows", name);
        }
    }
}
