namespace LongCluster.Grains.Status;

/// <summary>What one silo reports about itself to the status page.</summary>
/// <param name="Silo">Silo address (host:port@generation).</param>
/// <param name="Endpoint">HTTP base URL of its client API.</param>
/// <param name="ResidentBytes">Bytes its shards hold in memory now (KV of every layer, pending uploads, unread outputs).</param>
/// <param name="MaxResidentBytes">Its budget for those bytes (<c>MaxResidentBytes</c>).</param>
/// <param name="MemoryResidentBytes">Bytes its memory grains hold in memory (evicted blocks of retrieval sequences and their key sums).</param>
/// <param name="MemorySpilledBytes">Bytes of evicted blocks its memory grains keep in spill files.</param>
/// <param name="Sequences">Ids of the sequences it hosts at least one shard of, in ordinal order.</param>
/// <param name="RecentLayers">The last layer runs its coordinators finished, oldest first (at most <see cref="Status.RecentLayers.Capacity"/>).</param>
[GenerateSerializer, Immutable]
public sealed record SiloReport(string Silo, string Endpoint, long ResidentBytes, long MaxResidentBytes, long MemoryResidentBytes, long MemorySpilledBytes, IReadOnlyList<string> Sequences, IReadOnlyList<LayerTiming> RecentLayers);
