namespace LongCluster.Grains.Memory;

/// <summary>The block geometry of a retrieval sequence's layer: storage dtype (safetensors name), B, Hq, Hkv, d.</summary>
[GenerateSerializer, Immutable]
public sealed record MemoryShape(string DType, int Block, int QueryHeads, int KeyValueHeads, int HeadDim);

/// <summary>
/// Evicted blocks for one memory grain: ids <see cref="Blocks"/> (ascending), K and V <c>[n, B, Hkv, d]</c> in the
/// storage dtype, and each block's representative key sums <c>[n, Hkv, d]</c> (f32). Storing a block id again replaces it.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MemoryStore(string SequenceId, string Epoch, MemoryShape Shape, int[] Blocks, byte[] Keys, byte[] Values, float[] KeySums);

/// <summary>
/// Score the blocks below <see cref="Evicted"/> (of which this grain must hold <see cref="Held"/>) against a chunk's
/// query sum <c>[Hkv, d]</c>; return the best <see cref="TopK"/> per KV head.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MemoryScore(string Epoch, int Evicted, int Held, int TopK, float[] QuerySum);

/// <summary>A grain's best candidates: <c>[Hkv, PerHead]</c> block ids, ascending per head, and their relevance.</summary>
[GenerateSerializer, Immutable]
public sealed record MemoryCandidates(int PerHead, int[] Blocks, float[] Scores);

/// <summary>
/// Attend a chunk's query rows <c>[Rows, Hq, d]</c> (storage dtype) over the chosen blocks of each KV head held here
/// (<see cref="Chosen"/>[g], ascending). <see cref="Evicted"/> and <see cref="Held"/> as in <see cref="MemoryScore"/>.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record MemoryAttend(string Epoch, int Evicted, int Held, int Rows, byte[] Query, int[][] Chosen);

/// <summary>A partial over the chosen blocks held by one grain: O <c>[rows, Hq, d]</c>, LSE <c>[rows, Hq]</c> (−∞ for heads with none here).</summary>
[GenerateSerializer, Immutable]
public sealed record MemoryPartial(float[] Output, float[] LogSumExp);

/// <summary>
/// A retrieval layer's shard-side state built elsewhere (a benchmark's synthetic history, whose evicted blocks were
/// stored in the memory grains directly): <see cref="Length"/> tokens, blocks below <see cref="Evicted"/> in memory
/// grains; K and V <c>[rows, Hkv, d]</c> of init <c>[0, min(init, Length))</c> and of the window
/// <c>[init + Evicted · B, Length)</c>; the key sums <c>[n, Hkv, d]</c> of the window's whole blocks and the query sum
/// <c>[Hkv, d]</c> of the block being filled.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record RetrievalHistory(int Layer, long Length, int Evicted, byte[] InitKey, byte[] InitValue, byte[] WindowKey, byte[] WindowValue, float[] WindowKeySums, float[] PendingQuerySum);

/// <summary>What a memory grain holds: blocks, and their bytes in memory and in spill files.</summary>
[GenerateSerializer, Immutable]
public sealed record MemoryHolding(int Blocks, long ResidentBytes, long SpilledBytes);

/// <summary>
/// One part of the evicted blocks of one layer of a retrieval sequence (key <c>sequence/memory/layer~epoch/part/parts</c>,
/// spread-placed so the parts of a layer sit on different silos; block j lives in part <c>j mod parts</c>). Compute goes
/// to the data: it scores its blocks and attends the chosen ones; K and V never leave it. An activation that lost its
/// blocks (its silo failed) answers <see cref="ServiceErrorCode.Degraded"/> when asked for blocks it should hold.
/// </summary>
public interface IMemoryGrain : IGrainWithStringKey
{
    Task StoreAsync(MemoryStore blocks, CancellationToken cancellationToken);

    Task<MemoryCandidates> ScoreAsync(MemoryScore request, CancellationToken cancellationToken);

    Task<MemoryPartial> AttendAsync(MemoryAttend request, CancellationToken cancellationToken);

    [AlwaysInterleave]
    Task<MemoryHolding> DescribeAsync(CancellationToken cancellationToken);

    /// <summary>
    /// How many blocks below <paramref name="evicted"/> of incarnation <paramref name="epoch"/> it holds (0 for an
    /// activation that holds none, such as one made after its silo failed): its holder compares it with what it stored.
    /// </summary>
    [AlwaysInterleave]
    Task<int> CountAsync(string epoch, int evicted, CancellationToken cancellationToken);

    /// <summary>Frees every block (and spill file) of incarnation <paramref name="epoch"/>.</summary>
    Task DeleteAsync(string epoch, CancellationToken cancellationToken);
}
