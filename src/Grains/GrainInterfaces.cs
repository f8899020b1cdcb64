using LongCluster.Contracts;

namespace LongCluster.Grains;

/// <summary>Rows of one tensor as they travel between the client API and a shard: safetensors dtype name, shape, raw little-endian bytes.</summary>
[GenerateSerializer, Immutable]
public sealed record TensorRows(string DType, long[] Shape, byte[] Data);

/// <summary>
/// What a shard is told when its sequence is created; <see cref="Epoch"/> distinguishes incarnations of one id. A
/// retrieval sequence's evicted blocks go to <see cref="MemoryParts"/> memory grains per layer.
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ShardSetup(string SequenceId, string Epoch, SequenceSpec Spec, int Index, int Shards, int MemoryParts = 0);

/// <summary>Run one layer of one chunk: rank i of the run is shard <c>Keys[i]</c>, which lives on silo <c>Silos[i]</c>.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardRun(string Epoch, int Chunk, int Layer, Guid Run, string[] Keys, string[] Silos);

/// <summary>A shard's O <c>[rows, Hq, d]</c> and LSE <c>[rows, Hq]</c>, f32 bytes, rows in its upload order.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardOutput(int Rows, byte[] Output, byte[] LogSumExp);

/// <summary>One decode step on one shard. The owner(s) of the position append K and V before attending.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardDecode(string Epoch, int Layer, long Position, int Document, bool Append, TensorRows Query, TensorRows Key, TensorRows Value);

/// <summary>A shard's partial over its KV for query heads [First, First+Count): O <c>[Count·d]</c>, LSE <c>[Count]</c>.</summary>
[GenerateSerializer, Immutable]
public sealed record DecodePartial(int QueryHeadFirst, int QueryHeadCount, float[] Output, float[] LogSumExp);

/// <summary>
/// Owns one shard of one sequence: the rows the shard receives for the chunk in flight, its KV segment for every
/// layer, and its unread outputs. Spread-placed (key <c>sequence~epoch/index/count</c>), so the P shards of a sequence
/// sit on different silos. Runs its part of each ring step; ring blocks from the other ranks arrive through
/// <see cref="DeliverAsync"/>.
/// </summary>
public interface ISequenceShardGrain : IGrainWithStringKey
{
    Task<ShardInfo> InitAsync(ShardSetup setup, CancellationToken cancellationToken);

    [AlwaysInterleave]
    Task<ShardInfo> DescribeAsync(string epoch, CancellationToken cancellationToken);

    /// <summary>The chunk (of <paramref name="tokens"/> tokens) starts: the rows this shard receives, as global positions (and document ids) in upload order.</summary>
    Task BeginChunkAsync(string epoch, int chunk, int tokens, long[] positions, int[] documents, CancellationToken cancellationToken);

    /// <summary>Stores Q <c>[rows, Hq, d]</c>, K and V <c>[rows, Hkv, d]</c> for one layer of the chunk in flight (replacing an earlier upload).</summary>
    Task UploadAsync(string epoch, int chunk, int layer, TensorRows query, TensorRows key, TensorRows value, CancellationToken cancellationToken);

    [ResponseTimeout("01:00:00")]
    Task<ShardTimings> RunLayerAsync(ShardRun run, CancellationToken cancellationToken);

    /// <summary>
    /// A ring block from rank <paramref name="source"/> of run <paramref name="run"/> for this shard: put in this
    /// silo's mailbox before the call returns (the shard takes over the block's frame reference).
    /// </summary>
    [AlwaysInterleave]
    Task DeliverAsync(Guid run, int source, Exchange.RingBlock block, CancellationToken cancellationToken);

    /// <summary>Stops a run in progress (or one not started yet) at once: its receives fail, it rolls itself back.</summary>
    [AlwaysInterleave]
    Task AbortRunAsync(Guid run, CancellationToken cancellationToken);

    /// <summary>Rolls back a run that finished here while another shard failed, so the layer can run again.</summary>
    Task RollBackRunAsync(Guid run, CancellationToken cancellationToken);

    /// <summary>Every shard finished the layer: its uploads are no longer needed for a retry.</summary>
    Task CommitLayerAsync(string epoch, int chunk, int layer, CancellationToken cancellationToken);

    Task<ShardOutput> ReadOutputAsync(string epoch, int chunk, int layer, CancellationToken cancellationToken);

    [ResponseTimeout("00:10:00")]
    Task<DecodePartial> DecodeAsync(ShardDecode step, CancellationToken cancellationToken);

    /// <summary>Removes the row a failed decode step appended at <paramref name="position"/>, if it did.</summary>
    Task UndoDecodeAsync(string epoch, int layer, long position, CancellationToken cancellationToken);

    Task DeleteAsync(string epoch, CancellationToken cancellationToken);

    /// <summary>
    /// Replaces a retrieval layer's state, before any token was prefilled, with a history whose evicted blocks the
    /// caller stored in the layer's memory grains (<c>bench retrieval</c>: a synthetic million-token history without a
    /// million-token prefill). The coordinator is not told: the caller decodes through <see cref="DecodeAsync"/>.
    /// </summary>
    Task LoadRetrievalAsync(string epoch, Memory.RetrievalHistory history, CancellationToken cancellationToken);
}

/// <summary>
/// One per sequence (key = sequence id): validates the spec, places the shards, plans every chunk, drives each
/// layer over all shards (a layer is the unit of retry), merges decode partials, and keeps the sequence's state.
/// </summary>
public interface ICoordinatorGrain : IGrainWithStringKey
{
    Task<SequenceInfo> CreateAsync(SequenceSpec spec, CancellationToken cancellationToken);

    [AlwaysInterleave]
    Task<SequenceInfo> DescribeAsync(CancellationToken cancellationToken);

    /// <summary>The current chunk's plan (to upload to, and read from, its shards); null when no chunk was started.</summary>
    [AlwaysInterleave]
    Task<ChunkPlan?> CurrentChunkAsync(CancellationToken cancellationToken);

    /// <summary>Shard grain keys and the incarnation epoch, for the client API to reach shards directly.</summary>
    [AlwaysInterleave]
    Task<ShardAddress> ShardAsync(int index, CancellationToken cancellationToken);

    Task<ChunkPlan> BeginChunkAsync(ChunkRequest request, CancellationToken cancellationToken);

    [ResponseTimeout("01:00:00")]
    Task<LayerRunResult> RunLayerAsync(int chunk, int layer, CancellationToken cancellationToken);

    [ResponseTimeout("00:10:00")]
    Task<DecodeResult> DecodeAsync(int layer, TensorRows query, TensorRows key, TensorRows value, int document, CancellationToken cancellationToken);

    Task DeleteAsync(CancellationToken cancellationToken);

    /// <summary>Whether this coordinator holds the sequence incarnation <paramref name="epoch"/> (an idle shard asks before it lets itself be collected).</summary>
    [AlwaysInterleave]
    Task<bool> HoldsAsync(string epoch, CancellationToken cancellationToken);
}

/// <summary>Where the client API finds a shard (its grain key and the sequence's epoch), and the output row shape <c>[Hq, d]</c>.</summary>
[GenerateSerializer, Immutable]
public sealed record ShardAddress(string Key, string Epoch, int Shards, int QueryHeads, int HeadDim);

/// <summary>The ids of live sequences, for listing (key <c>all</c>).</summary>
public interface ISequenceDirectoryGrain : IGrainWithStringKey
{
    Task AddAsync(string id, CancellationToken cancellationToken);

    Task RemoveAsync(string id, CancellationToken cancellationToken);

    [AlwaysInterleave]
    Task<string[]> ListAsync(CancellationToken cancellationToken);
}
