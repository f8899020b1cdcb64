namespace LongCluster.Contracts;

/// <summary>Progress of the chunk in flight: layers done so far out of the sequence's layers.</summary>
[GenerateSerializer, Immutable]
public sealed record ChunkProgress(int Index, long Start, int Tokens, int LayersDone);
