using LongCluster.Contracts;

namespace LongCluster.Grains.Status;

/// <summary>One finished layer run of one chunk, as its coordinator saw it.</summary>
/// <param name="Finished">When the coordinator had every shard's answer.</param>
/// <param name="Seconds">Wall time of the whole run at the coordinator, all shards in parallel.</param>
/// <param name="Shards">Each shard's split of its time (compute, waiting, scatter and gather of the all-to-all, transfer).</param>
[GenerateSerializer, Immutable]
public sealed record LayerTiming(DateTimeOffset Finished, string SequenceId, int Chunk, int Layer, double Seconds, IReadOnlyList<ShardTimings> Shards);
