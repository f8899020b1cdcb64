namespace LongCluster.Contracts;

/// <summary>A sequence as its coordinator knows it.</summary>
/// <param name="Length">Tokens whose every layer is done (prefilled or decoded).</param>
/// <param name="Problem">Why the sequence is degraded, or null.</param>
/// <param name="Coordinator">The silo whose coordinator grain holds the sequence's state (lost with that silo).</param>
/// <param name="CoordinatorEndpoint">HTTP base URL of that silo: a decode step sent there skips a hop between silos.</param>
/// <param name="LayoutChosen">For a sequence created with <c>layout: auto</c>, the layout the coordinator chose (also its spec's layout); null otherwise.</param>
/// <param name="PredictedLayerMs">For <c>layout: auto</c>, the cost model's prediction for one layer of a chunk of the spec's <c>AutoChunkTokens</c> under the chosen layout, in ms; null otherwise.</param>
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
    string? CoordinatorEndpoint = null,
    string? LayoutChosen = null,
    double? PredictedLayerMs = null);
