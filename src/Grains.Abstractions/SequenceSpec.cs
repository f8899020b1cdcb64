using System.Text.Json.Serialization;

namespace LongCluster.Contracts;

/// <summary>
/// What a client asks for when it creates a sequence. <see cref="Shards"/> = 0 places one shard per active silo.
/// <see cref="Mask"/> is <c>full</c>, <c>causal</c>, <c>window:W</c>, <c>prefix:N</c>, <c>document</c> or
/// <c>document-causal</c> or <c>retrieval[:block=..,repr=..,topk=..,init=..,local=..,chunk=..]</c> (the memory tier's rule:
/// one shard, whose evicted blocks live in memory grains on every silo; <see cref="Shards"/> must be 0 or 1 and the
/// layout reads back as <c>contiguous</c>; each prefill chunk request and each decode token is one request of the rule);
/// <see cref="Layout"/> is <c>contiguous</c>, <c>striped[:S]</c>, <c>zigzag</c>,
/// <c>ulysses</c>, <c>hybrid:U</c> or <c>auto</c>; <see cref="DType"/> is the storage type (<c>f32</c>, <c>f16</c>, <c>bf16</c>).
/// <c>auto</c> asks the coordinator to pick, at creation, the layout its cost model predicts fastest for a chunk of
/// <see cref="AutoChunkTokens"/> tokens of this shape and mask on the sequence's shards; the sequence then keeps that
/// layout, and its <see cref="SequenceInfo"/> names it (<see cref="SequenceInfo.LayoutChosen"/>, and
/// <see cref="Layout"/> of its spec).
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

    /// <summary>Most tokens <see cref="AutoChunkTokens"/> may name: bounds the planning work at creation.</summary>
    public const int MaxAutoChunkTokens = 1 << 18;

    /// <summary>Chunk length <see cref="AutoChunkTokens"/> = 0 stands for: a long-context prefill chunk.</summary>
    public const int DefaultAutoChunkTokens = 32768;

    /// <summary>
    /// For <c>layout: auto</c>: the tokens per prefill chunk to plan for (1..<see cref="MaxAutoChunkTokens"/>); 0 means
    /// <see cref="DefaultAutoChunkTokens"/>. The layout is chosen once, at creation, for chunks of this length (the
    /// first chunk: earlier chunks' KV is not modelled). Ignored for any other layout.
    /// </summary>
    [Id(8)]
    public int AutoChunkTokens { get; init; }
}
