using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Gpu;

/// <summary>
/// Device-side timings of the ILGPU kernels for <c>bench/gpu.sh</c>. Inputs are made on the device (a hash, not
/// uploaded) and stay resident; each figure is the median of <c>repetitions</c> timed runs after one warm-up, each run
/// timed from launch to <c>Synchronize</c> — kernel time, no transfers, no tile-table building. Every method holds
/// the backend's lock while it runs.
/// </summary>
public static class GpuBenchmarks
{
    /// <summary>One forward timing: seconds per call, the live (query, key) pairs of the mask and their FLOPs (4·d·Hq per pair).</summary>
    public sealed record ForwardTiming(double Seconds, long LivePairs, double Flops)
    {
        public double GflopsPerSecond => Flops / Seconds / 1e9;
    }

    /// <summary>One bandwidth timing: seconds per run and the bytes a run moves (see each method for which bytes).</summary>
    public sealed record BandwidthTiming(double Seconds, long Bytes)
    {
        public double GigabytesPerSecond => Bytes / Seconds / 1e9;
    }

    /// <summary>
    /// Forward over T query and T key tokens at positions 0..T−1 (self-attention), Q/K/V stored as <paramref name="dtype"/>
    /// (F32 or BF16), with the tile table of <paramref name="mask"/> resident too.
    /// </summary>
    public static ForwardTiming Forward(
        IlgpuBackend backend, DType dtype, int queryHeads, int keyValueHeads, int headDim, int tokens, AttentionMask mask, int repetitions = 5)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var shape = new AttentionShape(tokens, tokens, queryHeads, keyValueHeads, headDim);
        shape.Validate();
        long[] positions = new long[tokens];
        for (int i = 0; i < tokens; i++)
        {
            positions[i] = i;
        }

        long livePairs = mask.CountLivePairs(positions, positions);
        AttentionParams p = IlgpuBackend.ForwardParams(shape, mask, 1f / MathF.Sqrt(headDim));
        byte[] table = IlgpuBackend.TileTable(p, mask, new ResolvedTokens(positions, positions, Array.Empty<int>(), Array.Empty<int>()));
        lock (backend.Gate)
        {
            Accelerator accelerator = backend.Accelerator;
            using var pos = accelerator.Allocate1D(positions);
            using var docs = accelerator.Allocate1D<int>(1);
            using var tiles = accelerator.Allocate1D(table);
            using var o = accelerator.Allocate1D<float>(shape.QueryElements);
            using var lse = accelerator.Allocate1D<float>(shape.LseElements);
            double seconds = dtype switch
            {
                DType.F32 => TimeForward<float, F32Load>(backend, p, shape, pos.View, docs.View, tiles.View, o.View, lse.View, repetitions),
                DType.BF16 => TimeForward<ushort, BF16Load>(backend, p, shape, pos.View, docs.View, tiles.View, o.View, lse.View, repetitions),
                _ => throw new ArgumentException($"dtype must be F32 or BF16, got {dtype}", nameof(dtype)),
            };
            return new ForwardTiming(seconds, livePairs, shape.Flops(livePairs));
        }
    }

    /// <summary>
    /// Decode of one query row (position Tk − 1, causal) over Tk keys; <c>Bytes</c> is the K and V bytes the call
    /// reads (2 · Tk · Hkv · d · element size), the traffic that bounds decode. The time includes the chunk merge.
    /// </summary>
    public static BandwidthTiming Decode(IlgpuBackend backend, DType dtype, int keyTokens, int queryHeads, int keyValueHeads, int headDim, int repetitions = 5)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var shape = new AttentionShape(1, keyTokens, queryHeads, keyValueHeads, headDim);
        shape.Validate();
        long[] keyPositions = new long[keyTokens];
        for (int i = 0; i < keyTokens; i++)
        {
            keyPositions[i] = i;
        }

        AttentionParams p = IlgpuBackend.DecodeParams(shape, AttentionMask.Causal, 1f / MathF.Sqrt(headDim));
        lock (backend.Gate)
        {
            Accelerator accelerator = backend.Accelerator;
            using var qPos = accelerator.Allocate1D(new long[] { keyTokens - 1 });
            using var kPos = accelerator.Allocate1D(keyPositions);
            using var docs = accelerator.Allocate1D<int>(1);
            using var partialO = accelerator.Allocate1D<float>((long)p.QueryTiles * shape.QueryElements);
            using var partialL = accelerator.Allocate1D<float>((long)p.QueryTiles * shape.LseElements);
            using var o = accelerator.Allocate1D<float>(shape.QueryElements);
            using var lse = accelerator.Allocate1D<float>(shape.LseElements);
            (double seconds, int elementSize) = dtype switch
            {
                DType.F32 => (TimeDecode<float, F32Load>(backend, p, shape, qPos.View, kPos.View, docs.View, partialO.View, partialL.View, o.View, lse.View, repetitions), 4),
                DType.BF16 => (TimeDecode<ushort, BF16Load>(backend, p, shape, qPos.View, kPos.View, docs.View, partialO.View, partialL.View, o.View, lse.View, repetitions), 2),
                _ => throw new ArgumentException($"dtype must be F32 or BF16, got {dtype}", nameof(dtype)),
            };
            return new BandwidthTiming(seconds, 2 * shape.KeyValueElements * elementSize);
        }
    }

    /// <summary>
    /// A device-to-device copy of <paramref name="bytes"/> (the driver's copy); <c>Bytes</c> counts bytes read plus
    /// bytes written (2 · <paramref name="bytes"/>), the way a bandwidth test reports a copy.
    /// </summary>
    public static BandwidthTiming Copy(IlgpuBackend backend, long bytes, int repetitions = 5)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 4);
        lock (backend.Gate)
        {
            Accelerator accelerator = backend.Accelerator;
            long floats = bytes / 4;
            using var source = accelerator.Allocate1D<float>(floats);
            using var target = accelerator.Allocate1D<float>(floats);
            Fill(accelerator, source.View.BaseView, 1);
            double seconds = Median(accelerator, repetitions, () => source.View.CopyTo(target.View));
            return new BandwidthTiming(seconds, 2 * floats * 4);
        }
    }

    /// <summary>
    /// cuBLAS SGEMM (column-major, no transposes) of M×K by K×N through ILGPU.Algorithms' <c>CuBlas</c>, in GFLOP/s
    /// (2·M·N·K per call): the dense-matmul ceiling beside which the forward kernel's FLOP rate is read.
    /// </summary>
    /// <exception cref="NotSupportedException">The backend does not run on CUDA (cuBLAS exists only there).</exception>
    public static double SgemmGflops(IlgpuBackend backend, int m, int n, int k, int repetitions = 5)
    {
        ArgumentNullException.ThrowIfNull(backend);
        if (backend.Accelerator is not CudaAccelerator cuda)
        {
            throw new NotSupportedException($"cuBLAS SGEMM needs a CUDA accelerator; this backend is {backend.Name}");
        }

        lock (backend.Gate)
        {
            using var a = cuda.Allocate1D<float>((long)m * k);
            using var b = cuda.Allocate1D<float>((long)k * n);
            using var c = cuda.Allocate1D<float>((long)m * n);
            Fill(cuda, a.View.BaseView, 2);
            Fill(cuda, b.View.BaseView, 3);
            using var blas = new CuBlas(cuda);
            double seconds = Median(cuda, repetitions, () =>
                blas.Gemm(CuBlasOperation.NonTranspose, CuBlasOperation.NonTranspose, m, n, k, 1f, a.View.BaseView, m, b.View.BaseView, k, 0f, c.View.BaseView, m));
            return 2.0 * m * n * k / seconds / 1e9;
        }
    }

    private static double TimeForward<TElement, TLoad>(
        IlgpuBackend backend, AttentionParams p, AttentionShape shape, ArrayView<long> positions, ArrayView<int> documents, ArrayView<byte> tiles,
        ArrayView<float> output, ArrayView<float> logSumExp, int repetitions)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        Accelerator accelerator = backend.Accelerator;
        using var inputs = new ResidentInputs<TElement>(accelerator, shape, seed: 4);
        return Median(accelerator, repetitions, () => backend.LaunchForward<TElement, TLoad>(
            p, inputs.Query, inputs.Key, inputs.Value, positions, positions, documents, documents, tiles, output, logSumExp));
    }

    private static double TimeDecode<TElement, TLoad>(
        IlgpuBackend backend, AttentionParams p, AttentionShape shape, ArrayView<long> queryPositions, ArrayView<long> keyPositions, ArrayView<int> documents,
        ArrayView<float> partialO, ArrayView<float> partialL, ArrayView<float> output, ArrayView<float> logSumExp, int repetitions)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        Accelerator accelerator = backend.Accelerator;
        using var inputs = new ResidentInputs<TElement>(accelerator, shape, seed: 7);
        return Median(accelerator, repetitions, () => backend.LaunchDecode<TElement, TLoad>(
            p, inputs.Query, inputs.Key, inputs.Value, queryPositions, keyPositions, documents, documents, partialO, partialL, output, logSumExp));
    }

    /// <summary>Q, K and V of a shape on the device in the storage type, filled with seeded values (Q from <c>seed</c>, K and V from the next two).</summary>
    private sealed class ResidentInputs<TElement> : IDisposable
        where TElement : unmanaged
    {
        private readonly MemoryBuffer1D<TElement, Stride1D.Dense> _query;
        private readonly MemoryBuffer1D<TElement, Stride1D.Dense> _key;
        private readonly MemoryBuffer1D<TElement, Stride1D.Dense> _value;

        public ResidentInputs(Accelerator accelerator, AttentionShape shape, uint seed)
        {
            _query = accelerator.Allocate1D<TElement>(shape.QueryElements);
            _key = accelerator.Allocate1D<TElement>(shape.KeyValueElements);
            _value = accelerator.Allocate1D<TElement>(shape.KeyValueElements);
            Fill(accelerator, _query.View.BaseView, seed);
            Fill(accelerator, _key.View.BaseView, seed + 1);
            Fill(accelerator, _value.View.BaseView, seed + 2);
        }

        public ArrayView1D<TElement, Stride1D.Dense> Query => _query.View;

        public ArrayView1D<TElement, Stride1D.Dense> Key => _key.View;

        public ArrayView1D<TElement, Stride1D.Dense> Value => _value.View;

        public void Dispose()
        {
            _query.Dispose();
            _key.Dispose();
            _value.Dispose();
        }
    }

    private static void Fill<TElement>(Accelerator accelerator, ArrayView<TElement> view, uint seed)
        where TElement : unmanaged
    {
        if (typeof(TElement) == typeof(float))
        {
            accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, uint>(AttentionKernels.FillF32)((int)view.Length, view.Cast<float>(), seed);
        }
        else
        {
            accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, uint>(AttentionKernels.FillBF16)((int)view.Length, view.Cast<ushort>(), seed);
        }

        accelerator.Synchronize();
    }

    /// <summary>Median seconds of <paramref name="repetitions"/> timed runs (launch to synchronize) after one warm-up.</summary>
    private static double Median(Accelerator accelerator, int repetitions, Action run)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        run();
        accelerator.Synchronize();
        var times = new double[repetitions];
        for (int i = 0; i < repetitions; i++)
        {
            long start = Stopwatch.GetTimestamp();
            run();
            accelerator.Synchronize();
            times[i] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }

        Array.Sort(times);
        return times[repetitions / 2];
    }
}
