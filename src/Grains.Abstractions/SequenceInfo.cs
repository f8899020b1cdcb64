namespace LongCluster.Contracts;

/// <summary>A sequence as its coordinator knows it.</summary>
/// <param name="Length">Tokens whose every layer is done (prefilled or decoded).</param>
/// <param name="Problem">Why the sequence is degraded, or null.</param>
/// <param name="Coordinator">The silo whose coordinator grain holds the sequence's state (lost with that silo).</param>
/// <param name="CoordinatorEndpoint">HTTP base URL of that silo: a decode step sent there skips a hop between silos.</param>
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
    string? Coordinator = null,
    string? CoordinatorEndpoint = null);
