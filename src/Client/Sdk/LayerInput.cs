using LongCluster.Tensors;

namespace LongCluster.Client;

/// <summary>Q <c>[T, Hq, d]</c>, K and V <c>[T, Hkv, d]</c> of one layer of a chunk, in token order, in the sequence's dtype.</summary>
public sealed record LayerInput(HostTensor Query, HostTensor Key, HostTensor Value);
