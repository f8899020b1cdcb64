namespace LongCluster.Kernels.Backends;

/// <summary>The SIMD kernels of <see cref="Attention"/> on the host's cores; K and V are read where they are stored.</summary>
public sealed class CpuBackend : IAttentionBackend
{
    public static CpuBackend Instance { get; } = new();

    private CpuBackend()
    {
    }

    public string Name => "cpu";

    public long KeptBytes => 0;

    public IKeptKeyValue? Keep<T>(ReadOnlySpan<T> key, ReadOnlySpan<T> value)
        where T : unmanaged => null;

    public void Forward<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged =>
        Attention.Forward(query, key, value, shape, mask, tokens, output, logSumExp, options);

    public void Decode<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged =>
        Attention.Decode(query, key, value, shape, mask, tokens, output, logSumExp, options);

    public void MergePartials(
        ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2,
        Span<float> output, Span<float> logSumExp, int headDim) =>
        Attention.MergePartials(output1, logSumExp1, output2, logSumExp2, output, logSumExp, headDim);
}
