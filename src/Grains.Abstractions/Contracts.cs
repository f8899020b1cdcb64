using System.Text.Json.Serialization;

namespace LongCluster.Grains;

/// <summary>Life cycle of a sequence.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SequenceState>))]
[GenerateSerializer]
public enum SequenceState
{
    /// <summary>Shards placed, no tokens yet.</summary>
    Created,

    /// <summary>A chunk is in progress (some of its layers are not done).</summary>
    Prefilling,

    /// <summary>Every chunk so far is done in every layer: decode or the next chunk may start.</summary>
    Ready,

    /// <summary>A shard lost its KV segment (its silo failed): the sequence refuses to answer rather than answer wrongly.</summary>
    Degraded,

    /// <summary>Deleted; every shard's memory is freed.</summary>
    Deleted,
}

/// <summary>
/// What a client asks for when it creates a sequence. <see cref="Shards"/> = 0 places one shard per active silo.
/// <see cref="Mask"/> is <c>full</c>, <c>causal</c>, <c>window:W</c>, <c>prefix:N</c>, <c>document</c> or
/// <c>document-causal</c>; <see cref="Layout"/> is <c>contiguous</c>, <c>striped[:S]</c>, <c>zigzag</c>,
/// <c>ulysses</c> or <c>hybrid:U</c>; <see cref="DType"/> is the storage type (<c>f32</c>, <c>f16</c>, <c>bf16</c>).
/// </summary>
[GenerateSerializer, Immutable]
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record SequenceSpec
{
    /// <summary>Most layers a sequence may have.</summary>
    public const int MaxLayers = 1024;

    [Id(0)]
    public int Layers { get; init; } = 1;

    [Id(1)]
    public int QueryHeads { get; init; }

    [Id(2)]
    public int KeyValueHeads { get; init; }

    [Id(3)]
    public int HeadDim { get; init; }

    [Id(4)]
    [JsonPropertyName("dtype")]
    public string DType { get; init; } = "f32";

    [Id(5)]
    public string Layout { get; init; } = "zigzag";

    [Id(6)]
    public int Shards { get; init; }

    [Id(7)]
    public string Mask { get; init; } = "causal";
}

/// <summary>One shard of a sequence: where it lives and what it holds.</summary>
/// <param name="Endpoint">HTTP base URL of the silo that hosts it: upload its rows and read its outputs there.</param>
/// <param name="Silo">Silo address (host:port@generation).</param>
/// <param name="ResidentBytes">Bytes it holds (KV of every layer, pending uploads, unread outputs).</param>
[GenerateSerializer, Immutable]
public sealed record ShardInfo(int Index, string Endpoint, string Silo, long StoredRows, long ResidentBytes);

/// <summary>Progress of the chunk in flight: layers done so far out of the sequence's layers.</summary>
[GenerateSerializer, Immutable]
public sealed record ChunkProgress(int Index, long Start, int Tokens, int LayersDone);

/// <summary>A sequence as its coordinator knows it.</summary>
/// <param name="Length">Tokens whose every layer is done (prefilled or decoded).</param>
/// <param name="Problem">Why the sequence is degraded, or null.</param>
/// <param name="Coordinator">The silo whose coordinator grain holds the sequence's state (lost with that silo).</param>
[GenerateSerializer, Immutable]
public sealed record SequenceInfo(
    string Id,
    SequenceSpec Spec,
    SequenceState State,
    long Length,
    int Shards,
    IReadOnlyList<ShardInfo> ShardMap,
    ChunkProgress? Chunk,
    int DecodeLayersDone,
    string? Problem,
    string? Coordinator = null);

/// <summary>Starts a chunk of <see cref="Tokens"/> tokens; <see cref="Documents"/> (one id per token) for document masks.</summary>
[GenerateSerializer, Immutable]
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record ChunkRequest(int Tokens, int[]? Documents = null);

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

    /// <summary>Copies this shard's rows out of the chunk's token order into <paramref name="shard"/> (in its order).</summary>
    public void FromTokenOrder(ReadOnlySpan<byte> chunk, Span<byte> shard, int rowBytes)
    {
        int r = 0;
        for (int run = 0; run < Runs.Length; run += 2)
        {
            int count = Runs[run + 1];
            chunk.Slice(Runs[run] * rowBytes, count * rowBytes).CopyTo(shard.Slice(r * rowBytes));
            r += count;
        }
    }
}

/// <summary>A chunk's placement: upload each shard's rows to its endpoint, then run each layer.</summary>
[GenerateSerializer, Immutable]
public sealed record ChunkPlan(string SequenceId, int Index, long Start, int Tokens, IReadOnlyList<ShardRows> Shards);

/// <summary>
/// Where one shard's time went in a layer: the Ulysses all-to-all (scatter and gather), kernel compute, waiting for
/// the next block after computing, and time its outgoing blocks spent on the wire (overlapping compute).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ShardTimings(int Index, double ScatterSeconds, double ComputeSeconds, double WaitingSeconds, double GatherSeconds, double TransferSeconds, long BytesSent);

/// <summary>One layer of one chunk, done.</summary>
[GenerateSerializer, Immutable]
public sealed record LayerRunResult(int Chunk, int Layer, double Seconds, IReadOnlyList<ShardTimings> Shards, SequenceInfo Sequence);

/// <summary>A decode step's result for one layer: O <c>[Hq·d]</c> and LSE <c>[Hq]</c> of the new token, f32.</summary>
[GenerateSerializer, Immutable]
public sealed record DecodeResult(long Position, int Layer, float[] Output, float[] LogSumExp, double Seconds);

/// <summary>The body of every 4xx/5xx answer.</summary>
/// <param name="Field">The request field that was wrong, when one was.</param>
/// <param name="Retryable">Whether the same request may succeed later (a silo failed or is busy).</param>
public sealed record ApiError(string Error, string? Field, bool Retryable, string Code);
