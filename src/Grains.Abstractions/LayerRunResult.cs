namespace LongCluster.Contracts;

/// <summary>One layer of one chunk, done.</summary>
[GenerateSerializer, Immutable]
public sealed record LayerRunResult(int Chunk, int Layer, double Seconds, IReadOnlyList<ShardTimings> Shards, SequenceInfo Sequence);
