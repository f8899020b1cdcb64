namespace LongCluster.Kernels.Backends;

/// <summary>
/// The attention operations a shard runs, on one kind of hardware: tiled forward, split-K decode and the LSE merge,
/// with the contracts of <see cref="Attention.Forward{T}"/>, <see cref="Attention.Decode{T}"/> and
/// <see cref="Attention.MergePartials"/> (same shapes, masks, errors and (O, LSE) results within the reference
/// tolerance). One backend per process: <see cref="CpuBackend"/> (the SIMD kernels) or the ILGPU backend of
/// <c>LongCluster.Kernels.Gpu</c>. A backend may be called from several threads at once.
/// </summary>
public interface IAttentionBackend
{
    /// <summary>What runs the kernels, for logs and benchmark output: <c>cpu</c>, <c>ilgpu-cuda</c>, <c>ilgpu-cpu</c>.</summary>
    string Name { get; }

    /// <summary>Bytes the live <see cref="IKeptKeyValue"/> copies take where they are kept (device memory); 0 for the CPU backend.</summary>
    long KeptBytes { get; }

    /// <summary>
    /// Keeps a copy of a stored KV segment (K and V <c>[rows, kvHeads, d]</c>) where this backend computes — device
    /// memory for a GPU — until the handle is disposed; later calls given the handle read that copy instead of copying
    /// K and V again. Null when the backend computes on host memory (the CPU backend) or has no room left under its
    /// budget (the calls then copy K and V each time: slower, the same result).
    /// </summary>
    IKeptKeyValue? Keep<T>(ReadOnlySpan<T> key, ReadOnlySpan<T> value)
        where T : unmanaged;

    /// <summary>Flash-attention forward; see <see cref="Attention.Forward{T}"/>. <paramref name="kept"/>, when given, holds this call's K and V.</summary>
    void Forward<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged;

    /// <summary>Split-K decode for a few query rows; see <see cref="Attention.Decode{T}"/>. <paramref name="kept"/>, when given, holds this call's K and V.</summary>
    void Decode<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged;

    /// <summary>Merges two partials over disjoint key sets by LSE; see <see cref="Attention.MergePartials"/>.</summary>
    void MergePartials(
        ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2,
        Span<float> output, Span<float> logSumExp, int headDim);
}

/// <summary>A KV segment's copy kept by a backend (<see cref="IAttentionBackend.Keep{T}"/>); disposing it frees the copy.</summary>
public interface IKeptKeyValue : IDisposable
{
    /// <summary>Elements of K (and of V) kept.</summary>
    int Elements { get; }

    /// <summary>Bytes the copy takes where it is kept.</summary>
    long Bytes { get; }
}
