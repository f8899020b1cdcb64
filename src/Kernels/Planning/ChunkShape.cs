namespace LongCluster.Kernels.Planning;

/// <summary>The chunk a layout is planned for: its tokens, heads, head dim, bytes per element and mask.</summary>
/// <param name="ElementSize">Bytes per Q/K/V element: 4 for f32, 2 for f16 and bf16.</param>
/// <param name="DocumentLength">Tokens per document for document masks (documents are consecutive runs); ignored otherwise.</param>
public sealed record ChunkShape(int Tokens, int QueryHeads, int KeyValueHeads, int HeadDim, int ElementSize, AttentionMask Mask, int DocumentLength = 4096);
