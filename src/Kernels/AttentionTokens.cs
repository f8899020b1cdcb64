namespace LongCluster.Kernels;

/// <summary>
/// Where the rows of one attention call sit in the whole sequence: global positions of the query rows and key
/// rows (empty means 0..T−1) and, for document masks, the document id of every row. A shard passes its own
/// positions so that its slice computes exactly what the whole sequence would.
/// </summary>
public readonly ref struct AttentionTokens
{
    public AttentionTokens(ReadOnlySpan<long> queryPositions, ReadOnlySpan<long> keyPositions, ReadOnlySpan<int> queryDocuments = default, ReadOnlySpan<int> keyDocuments = default)
    {
        QueryPositions = queryPositions;
        KeyPositions = keyPositions;
        QueryDocuments = queryDocuments;
        KeyDocuments = keyDocuments;
    }

    /// <summary>Global position of each query row, <c>[Tq]</c>, or empty for 0..Tq−1.</summary>
    public ReadOnlySpan<long> QueryPositions { get; }

    /// <summary>Global position of each key row, <c>[Tk]</c>, or empty for 0..Tk−1.</summary>
    public ReadOnlySpan<long> KeyPositions { get; }

    /// <summary>Document id of each query row, <c>[Tq]</c>; required by document masks, ignored otherwise.</summary>
    public ReadOnlySpan<int> QueryDocuments { get; }

    /// <summary>Document id of each key row, <c>[Tk]</c>; required by document masks, ignored otherwise.</summary>
    public ReadOnlySpan<int> KeyDocuments { get; }

    /// <summary>Checks lengths against the shape and mask; copies positions into arrays (filling defaults) for the kernels.</summary>
    internal ResolvedTokens Resolve(in AttentionShape shape, in AttentionMask mask)
    {
        long[] q = ResolvePositions(QueryPositions, shape.QueryTokens, "QueryPositions", "Tq");
        long[] k = ResolvePositions(KeyPositions, shape.KeyTokens, "KeyPositions", "Tk");
        int[] qd = [];
        int[] kd = [];
        if (mask.Document)
        {
            qd = ResolveDocuments(QueryDocuments, shape.QueryTokens, "QueryDocuments", "Tq");
            kd = ResolveDocuments(KeyDocuments, shape.KeyTokens, "KeyDocuments", "Tk");
        }

        return new ResolvedTokens(q, k, qd, kd);
    }

    private static long[] ResolvePositions(ReadOnlySpan<long> positions, int count, string name, string dim)
    {
        if (positions.IsEmpty)
        {
            var result = new long[count];
            for (int i = 0; i < count; i++)
            {
                result[i] = i;
            }

            return result;
        }

        if (positions.Length != count)
        {
            throw new ArgumentException($"{name} has {positions.Length} entries, expected {dim} = {count} (or none for 0..{dim}-1)", "tokens");
        }

        return positions.ToArray();
    }

    private static int[] ResolveDocuments(ReadOnlySpan<int> documents, int count, string name, string dim)
    {
        if (documents.Length != count)
        {
            throw new ArgumentException($"the document mask needs {name} with {dim} = {count} entries, got {documents.Length}", "tokens");
        }

        return documents.ToArray();
    }
}

/// <summary>Token metadata materialised as arrays (so worker threads can share them).</summary>
internal sealed record ResolvedTokens(long[] QueryPositions, long[] KeyPositions, int[] QueryDocuments, int[] KeyDocuments)
{
    public bool HasDocuments => QueryDocuments.Length > 0;

    public TileRange QueryRange(int start, int count) => TileRange.Of(
        QueryPositions.AsSpan(start, count),
        HasDocuments ? QueryDocuments.AsSpan(start, count) : default);

    public TileRange KeyRange(int start, int count) => TileRange.Of(
        KeyPositions.AsSpan(start, count),
        HasDocuments ? KeyDocuments.AsSpan(start, count) : default);
}
