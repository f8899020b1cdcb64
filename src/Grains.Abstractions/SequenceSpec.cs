using System.Text.Json.Serialization;

namespace LongCluster.Contracts;

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
