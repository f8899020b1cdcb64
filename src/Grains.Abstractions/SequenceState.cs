using System.Text.Json.Serialization;

namespace LongCluster.Contracts;

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
