namespace LongCluster.Contracts;

/// <summary>A chunk's placement: upload each shard's rows to its endpoint, then run each layer.</summary>
[GenerateSerializer, Immutable]
public sealed record ChunkPlan(string SequenceId, int Index, long Start, int Tokens, IReadOnlyList<ShardRows> Shards);
