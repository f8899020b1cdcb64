namespace LongCluster.Contracts;

/// <summary>One shard of a sequence: where it lives and what it holds.</summary>
/// <param name="Endpoint">HTTP base URL of the silo that hosts it: upload its rows and read its outputs there.</param>
/// <param name="Silo">Silo address (host:port@generation).</param>
/// <param name="ResidentBytes">Bytes it holds (KV of every layer, pending uploads, unread outputs).</param>
[GenerateSerializer, Immutable]
public sealed record ShardInfo(int Index, string Endpoint, string Silo, long StoredRows, long ResidentBytes);
