namespace LongCluster.Contracts;

/// <summary>
/// Where one shard's time went in a layer: the Ulysses all-to-all (scatter and gather), kernel compute, waiting for
/// the next block after computing, and time its outgoing blocks spent on the wire (overlapping compute).
/// </summary>
[GenerateSerializer, Immutable]
public sealed record ShardTimings(int Index, double ScatterSeconds, double ComputeSeconds, double WaitingSeconds, double GatherSeconds, double TransferSeconds, long BytesSent);
