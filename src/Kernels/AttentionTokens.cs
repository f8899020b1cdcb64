using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LongCluster.Kernels;

/// <summary>
/// Where the rows of one attention call sit in the whole sequence: global positions of the query rows and key
/// rows (empty means 0..T−1) and, for document masks, the document id of every row. A shard passes its own
/// positions so that its slice computes exactly what the whole sequence would.
/// </summary>
public readonly ref struct AttentionTokens
{
    /// <summary>Most rows whose default positions come from the shared array (512 KiB of it at most).</summary>
    private const int IotaCached = 1 << 16;

    private static long[] s_iota = [];

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

    /// <summary>
    /// As <see cref="Resolve"/>, but the caller's positions and documents are viewed in place, not copied: decode
    /// reads a few of them per tile of keys, and a copy of Tk positions into fresh memory took a third of its time.
    /// The caller must hold every span of these tokens pinned (<c>fixed</c>) for as long as the result is used.
    /// </summary>
    internal unsafe ResolvedTokens ResolvePinned(in AttentionShape shape, in AttentionMask mask)
    {
        ReadOnlyMemory<long> q = QueryPositions.IsEmpty ? Iota(shape.QueryTokens) : View(QueryPositions, shape.QueryTokens, "QueryPositions", "Tq");
        ReadOnlyMemory<long> k = KeyPositions.IsEmpty ? Iota(shape.KeyTokens) : View(KeyPositions, shape.KeyTokens, "KeyPositions", "Tk");
        ReadOnlyMemory<int> qd = default;
        ReadOnlyMemory<int> kd = default;
        if (mask.Document)
        {
            qd = View(QueryDocuments, shape.QueryTokens, "QueryDocuments", "Tq");
            kd = View(KeyDocuments, shape.KeyTokens, "KeyDocuments", "Tk");
        }

        return new ResolvedTokens(q, k, qd, kd);
    }

    private static unsafe ReadOnlyMemory<TItem> View<TItem>(ReadOnlySpan<TItem> items, int count, string name, string dim)
        where TItem : unmanaged
    {
        if (items.Length != count)
        {
            throw new ArgumentException(
                typeof(TItem) == typeof(long)
                    ? $"{name} has {items.Length} entries, expected {dim} = {count} (or none for 0..{dim}-1)"
                    : $"the document mask needs {name} with {dim} = {count} entries, got {items.Length}",
                "tokens");
        }

        return count == 0 ? default : new PinnedMemory<TItem>((TItem*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(items)), count).Memory;
    }

    /// <summary>
    /// 0..count−1, the positions of rows given none: a view of one shared, read-only array that grows by doubling, so
    /// a decode call over a block of keys (a memory grain attends many per step) allocates no positions of its own.
    /// </summary>
    private static ReadOnlyMemory<long> Iota(int count)
    {
        if (count > IotaCached)
        {
            return ResolvePositions([], count, "", ""); // a call over this many keys costs far more than their positions
        }

        long[] iota = Volatile.Read(ref s_iota);
        if (iota.Length < count)
        {
            iota = new long[Math.Min(IotaCached, Math.Max(Math.Max(count, 4096), iota.Length * 2))];
            for (int i = 0; i < iota.Length; i++)
            {
                iota[i] = i;
            }

            Volatile.Write(ref s_iota, iota); // a racing caller may publish its own copy: the same values either way
        }

        return iota.AsMemory(0, count);
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

/// <summary>Token metadata as memory that worker threads can share: arrays, or views of pinned caller spans.</summary>
internal sealed record ResolvedTokens(ReadOnlyMemory<long> QueryPositions, ReadOnlyMemory<long> KeyPositions, ReadOnlyMemory<int> QueryDocuments, ReadOnlyMemory<int> KeyDocuments)
{
    public bool HasDocuments => QueryDocuments.Length > 0;

    public TileRange QueryRange(int start, int count) => TileRange.Of(
        QueryPositions.Span.Slice(start, count),
        HasDocuments ? QueryDocuments.Span.Slice(start, count) : default);

    public TileRange KeyRange(int start, int count) => TileRange.Of(
        KeyPositions.Span.Slice(start, count),
        HasDocuments ? KeyDocuments.Span.Slice(start, count) : default);
}

/// <summary>Memory over pinned unmanaged items, valid while the caller keeps them pinned.</summary>
internal sealed unsafe class PinnedMemory<TItem>(TItem* items, int count) : MemoryManager<TItem>
    where TItem : unmanaged
{
    public override Span<TItem> GetSpan() => new(items, count);

    public override MemoryHandle Pin(int elementIndex = 0) => new(items + elementIndex);

    public override void Unpin()
    {
        // Pinned by the caller for the whole call: nothing to release.
    }

    protected override void Dispose(bool disposing)
    {
        // Owns nothing.
    }
}
