namespace LongCluster.Kernels;

/// <summary>Per-call settings of the attention kernels.</summary>
public sealed record AttentionOptions
{
    public static readonly AttentionOptions Default = new();

    /// <summary>Softmax scale applied to Q·Kᵀ; null means 1/√d.</summary>
    public float? Scale { get; init; }

    /// <summary>Worker threads; 0 means one per core. Results do not depend on it.</summary>
    public int MaxThreads { get; init; }

    /// <summary>
    /// Most bytes the forward kernel may spend on one KV head's K/V tiles, packed once per call and shared by every
    /// query tile; past it each work item packs the tiles it needs (same bits, more work). Packing a tile (Kᵀ
    /// transposed out of rows Hkv·d apart, V copied) cost 15% of the forward time when every item packed its own
    /// (perf, f32, T = 4096, d = 128, 240-row items). The default, 64 MiB, covers Tk = 65536 at d = 128; tests set 0
    /// to run the per-item path.
    /// </summary>
    internal long PackBudgetBytes { get; init; } = 64L << 20;

    /// <summary>Pins the vector width (tests compare the paths in one process); null means <see cref="Simd.Best"/>.</summary>
    internal SimdLevel? Simd { get; init; }

    internal SimdLevel ResolveSimd()
    {
        SimdLevel level = Simd ?? Kernels.Simd.Best;
        if (level > Kernels.Simd.Best)
        {
            throw new ArgumentException($"Simd {level} is not accelerated in this process (best: {Kernels.Simd.Best})", "options");
        }

        return level;
    }

    internal float ResolveScale(int headDim)
    {
        float scale = Scale ?? (1f / MathF.Sqrt(headDim));
        if (!float.IsFinite(scale))
        {
            throw new ArgumentException($"Scale must be finite, got {scale}", "options");
        }

        return scale;
    }

    internal int ResolveThreads()
    {
        if (MaxThreads < 0)
        {
            throw new ArgumentException($"MaxThreads must be >= 0 (0 = all cores), got {MaxThreads}", "options");
        }

        return MaxThreads == 0 ? Environment.ProcessorCount : MaxThreads;
    }
}
