using System.Text.Json.Serialization;

namespace LongCluster.Contracts;

/// <summary>Starts a chunk of <see cref="Tokens"/> tokens; <see cref="Documents"/> (one id per token) for document masks.</summary>
[GenerateSerializer, Immutable]
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Disallow)]
public sealed record ChunkRequest(int Tokens, int[]? Documents = null);
