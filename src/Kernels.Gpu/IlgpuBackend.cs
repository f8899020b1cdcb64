using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using LongCluster.Kernels.Backends;

namespace LongCluster.Kernels.Gpu;

/// <summary>Which ILGPU accelerator an <see cref="IlgpuBackend"/> runs on.</summary>
public enum IlgpuDevice
{
    /// <summary>The first CUDA device when one is present, else ILGPU's CPU accelerator.</summary>
    Auto,

    /// <summary>The first CUDA device; the constructor throws when there is none.</summary>
    Cuda,

    /// <summary>ILGPU's CPU accelerator: the same kernels on host threads, for tests (slow).</summary>
    Cpu,
}

/// <summary>
/// The attention operations as ILGPU kernels (<see cref="AttentionKernels"/>): on CUDA where a device exists, else on
/// ILGPU's CPU accelerator. Same contracts, errors and (O, LSE) within the reference tolerance as
/// <see cref="CpuBackend"/>; storage stays f32/f16/bf16 on the device and widens in the kernels (f32 accumulation).
/// One per process. Thread safety: every call takes one lock for its whole device work (uploads, launches on the
/// accelerator's default stream, downloads), so concurrent callers — the shards of an in-process cluster — run one
/// after another on the device; each call saturates the device on its own, so a stream per call would buy little.
/// Kept KV segments (<see cref="Keep{T}"/>) come from one pool counted against <see cref="BudgetBytes"/>.
/// </summary>
public sealed class IlgpuBackend : IAttentionBackend, IDisposable
{
    private readonly object _gate = new();

    // Keep's uploads run on a stream of their own, outside _gate, one at a time: a ring block staged while the previous
    // one computes (ContextParallelRank stages a peer's block as it arrives) copies while the kernels run.
    private readonly object _copyGate = new();
    private readonly AcceleratorStream _copyStream;
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private readonly DevicePool _pool;
    private readonly HashSet<KeptKeyValue> _kept = [];
    private readonly Dictionary<Type, object> _kernels = [];
    private readonly Action<KernelConfig, int, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _merge;
    private readonly int _groupSize;
    private bool _disposed;

    /// <param name="device">Which accelerator; <see cref="IlgpuDevice.Cuda"/> throws <see cref="InvalidOperationException"/> when no CUDA device is found.</param>
    /// <param name="budgetBytes">Device bytes kept KV segments may take; 0 means 80% of the device's memory.</param>
    public IlgpuBackend(IlgpuDevice device = IlgpuDevice.Auto, long budgetBytes = 0)
    {
        if (budgetBytes < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(budgetBytes), budgetBytes, "budgetBytes must be >= 0 (0 = 80% of the device's memory)");
        }

        // The CPU device: warps of 4, 8 warps (groups of 32 threads, enough to exercise every strided loop with
        // more rows than threads and the reverse), one multiprocessor per core.
        var cpu = new CPUDevice(4, 8, Math.Max(1, Environment.ProcessorCount));
        _context = Context.Create(builder => builder.Cuda().CPU(cpu).EnableAlgorithms());
        try
        {
            var cudaDevices = _context.GetCudaDevices();
            if (device == IlgpuDevice.Cuda && cudaDevices.Count == 0)
            {
                throw new InvalidOperationException("no CUDA device found (ILGPU saw none: no NVIDIA GPU or no CUDA driver); use the CPU accelerator or the cpu backend");
            }

            _accelerator = device != IlgpuDevice.Cpu && cudaDevices.Count > 0
                ? cudaDevices[0].CreateAccelerator(_context)
                : _context.GetCPUDevice(0).CreateAccelerator(_context);
            _groupSize = Math.Min(128, _accelerator.MaxNumThreadsPerGroup);
            long budget = budgetBytes == 0 ? (long)(_accelerator.MemorySize * 0.8) : budgetBytes;
            _pool = new DevicePool(_accelerator, budget);
            _copyStream = _accelerator.CreateStream();
            _merge = _accelerator.LoadStreamKernel<int, int, int, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(AttentionKernels.Merge);
        }
        catch
        {
            _accelerator?.Dispose();
            _context.Dispose();
            throw;
        }
    }

    /// <summary>CUDA devices ILGPU sees on this machine (0 without an NVIDIA GPU or its driver); makes and drops a context.</summary>
    public static int CudaDeviceCount()
    {
        using Context context = Context.Create(builder => builder.Cuda());
        return context.GetCudaDevices().Count;
    }

    /// <summary><c>ilgpu-cuda</c> or <c>ilgpu-cpu</c>.</summary>
    public string Name => IsCuda ? "ilgpu-cuda" : "ilgpu-cpu";

    /// <summary>Whether the kernels run on a CUDA device.</summary>
    public bool IsCuda => _accelerator.AcceleratorType == AcceleratorType.Cuda;

    /// <summary>The accelerator's own description (device name, memory), for logs.</summary>
    public string DeviceName => _accelerator.Name;

    /// <summary>Device bytes kept KV segments may take (pooled buffers included).</summary>
    public long BudgetBytes => _pool.BudgetBytes;

    /// <summary>Device bytes taken by live kept segments (size-class rounded, K and V together).</summary>
    public long KeptBytes
    {
        get
        {
            lock (_gate)
            {
                return _pool.InUseBytes;
            }
        }
    }

    internal Accelerator Accelerator => _accelerator;

    internal int GroupSize => _groupSize;

    internal object Gate => _gate;

    public IKeptKeyValue? Keep<T>(ReadOnlySpan<T> key, ReadOnlySpan<T> value)
        where T : unmanaged
    {
        if (!Widen.IsSupported<T>())
        {
            throw new NotSupportedException($"storage dtype {typeof(T).Name} is not supported (float, Half, BFloat16)");
        }

        if (key.Length != value.Length)
        {
            throw new ArgumentException($"value has {value.Length} elements, expected as many as key ({key.Length})", nameof(value));
        }

        long bytes = (long)key.Length * Marshal.SizeOf<T>();
        MemoryBuffer1D<byte, Stride1D.Dense>? k;
        MemoryBuffer1D<byte, Stride1D.Dense>? v;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            k = _pool.Rent(bytes);
            if (k is null)
            {
                return null;
            }

            v = _pool.Rent(bytes);
            if (v is null)
            {
                _pool.Return(k);
                return null;
            }
        }

        // The buffers are this call's alone until the handle exists: copy without holding the compute lock.
        lock (_copyGate)
        {
            Upload(k.View.BaseView.Cast<T>(), key, _copyStream);
            Upload(v.View.BaseView.Cast<T>(), value, _copyStream);
            _copyStream.Synchronize();
        }

        lock (_gate)
        {
            if (_disposed)
            {
                // Disposed while copying: the pool and its buffers are gone with the accelerator.
                throw new ObjectDisposedException(nameof(IlgpuBackend));
            }

            var kept = new KeptKeyValue(this, typeof(T), key.Length, k, v);
            _kept.Add(kept);
            return kept;
        }
    }

    public void Forward<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged =>
        Run(decode: false, query, key, value, shape, mask, tokens, output, logSumExp, options, kept);

    public void Decode<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
        where T : unmanaged =>
        Run(decode: true, query, key, value, shape, mask, tokens, output, logSumExp, options, kept);

    /// <summary>Checks the call as the CPU path does, then runs the forward or decode kernels of the storage dtype's loader.</summary>
    private void Run<T>(
        bool decode, ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options, IKeptKeyValue? kept)
        where T : unmanaged
    {
        var call = Prepare(query, key, value, shape, mask, tokens, output, logSumExp, options, kept);
        if (shape.QueryTokens == 0)
        {
            return;
        }

        if (typeof(T) == typeof(float))
        {
            RunAs<float, F32Load, T>(decode, call, query, key, value, output, logSumExp);
        }
        else if (typeof(T) == typeof(System.Half))
        {
            RunAs<ushort, F16Load, T>(decode, call, query, key, value, output, logSumExp);
        }
        else
        {
            RunAs<ushort, BF16Load, T>(decode, call, query, key, value, output, logSumExp);
        }
    }

    private void RunAs<TElement, TLoad, T>(bool decode, Call call, ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, Span<float> output, Span<float> logSumExp)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
        where T : unmanaged
    {
        if (decode)
        {
            DecodeAs<TElement, TLoad, T>(call, query, key, value, output, logSumExp);
        }
        else
        {
            ForwardAs<TElement, TLoad, T>(call, query, key, value, output, logSumExp);
        }
    }

    /// <summary>
    /// The merge kernel of decode (<see cref="AttentionKernels.Merge"/>) over two host partials: the partials are
    /// uploaded, merged on the device and downloaded. For host-resident partials the transfers cost more than the
    /// host's own merge; it runs on the device so that one backend computes everything its caller asks of it, and so
    /// that the merge kernel the decode path depends on is checked on its own.
    /// </summary>
    public void MergePartials(
        ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2,
        Span<float> output, Span<float> logSumExp, int headDim)
    {
        int rows = Attention.ValidateMerge(output1, logSumExp1, output2, logSumExp2, output, logSumExp, headDim);
        if (rows == 0)
        {
            return;
        }

        long elements = (long)rows * headDim;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            using var partialO = _accelerator.Allocate1D<float>(2 * elements);
            using var partialL = _accelerator.Allocate1D<float>(2L * rows);
            using var o = _accelerator.Allocate1D<float>(elements);
            using var l = _accelerator.Allocate1D<float>(rows);
            Upload(partialO.View.BaseView.SubView(0, elements), output1);
            Upload(partialO.View.BaseView.SubView(elements, elements), output2);
            Upload(partialL.View.BaseView.SubView(0, rows), logSumExp1);
            Upload(partialL.View.BaseView.SubView(rows, rows), logSumExp2);
            _merge(new KernelConfig(rows, MergeGroup(headDim)), rows, headDim, 2, partialO.View, partialL.View, o.View, l.View);
            _accelerator.Synchronize();
            o.View.BaseView.CopyToCPU(output);
            l.View.BaseView.CopyToCPU(logSumExp);
        }
    }

    /// <summary>Frees every kept segment, the pool and the accelerator; handles disposed later do nothing.</summary>
    public void Dispose()
    {
        // The copy lock first (as Keep never holds both): no upload is running when the accelerator goes.
        lock (_copyGate)
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            foreach (var kept in _kept)
            {
                kept.FreeBuffers();
            }

            _kept.Clear();
            _pool.Dispose();
            _copyStream.Dispose();
            _accelerator.Dispose();
            _context.Dispose();
        }
    }

    /// <summary>The launch parameters of a forward call over device views (also the benchmarks' entry).</summary>
    internal static AttentionParams ForwardParams(AttentionShape shape, AttentionMask mask, float scale)
    {
        int keyTile = AttentionKernels.KeyTileFor(shape.HeadDim);
        return new AttentionParams
        {
            QueryTokens = shape.QueryTokens,
            KeyTokens = shape.KeyTokens,
            QueryHeads = shape.QueryHeads,
            KeyValueHeads = shape.KeyValueHeads,
            HeadDim = shape.HeadDim,
            GroupSize = shape.GroupSize,
            QueryTile = AttentionKernels.QueryTile,
            KeyTile = keyTile,
            QueryTiles = (shape.QueryTokens + AttentionKernels.QueryTile - 1) / AttentionKernels.QueryTile,
            KeyTiles = (shape.KeyTokens + keyTile - 1) / keyTile,
            ScaleLog2 = scale * Attention.Log2E,
            MaskKind = (int)mask.Kind,
            MaskSize = mask.Size,
            Document = mask.Document ? 1 : 0,
        };
    }

    /// <summary>The launch parameters of a decode call: <c>QueryTile</c> is the row count Tq · Hq, <c>QueryTiles</c> the chunk count.</summary>
    internal static AttentionParams DecodeParams(AttentionShape shape, AttentionMask mask, float scale) => ForwardParams(shape, mask, scale) with
    {
        QueryTile = shape.QueryTokens * shape.QueryHeads,
        KeyTile = AttentionKernels.DecodeChunk,
        QueryTiles = Math.Max(1, (shape.KeyTokens + AttentionKernels.DecodeChunk - 1) / AttentionKernels.DecodeChunk),
        KeyTiles = 0,
    };

    /// <summary>The tile table of a forward call: <c>Classify</c> of every (query tile, key tile), row-major.</summary>
    internal static byte[] TileTable(AttentionParams p, AttentionMask mask, ResolvedTokens tokens)
    {
        var table = new byte[Math.Max(1, p.QueryTiles * p.KeyTiles)];
        var keyRanges = new TileRange[p.KeyTiles];
        for (int kt = 0; kt < p.KeyTiles; kt++)
        {
            int start = kt * p.KeyTile;
            keyRanges[kt] = tokens.KeyRange(start, Math.Min(p.KeyTile, p.KeyTokens - start));
        }

        for (int qt = 0; qt < p.QueryTiles; qt++)
        {
            int start = qt * p.QueryTile;
            TileRange queries = tokens.QueryRange(start, Math.Min(p.QueryTile, p.QueryTokens - start));
            for (int kt = 0; kt < p.KeyTiles; kt++)
            {
                table[(qt * p.KeyTiles) + kt] = mask.Classify(queries, keyRanges[kt]) switch
                {
                    TileVisibility.Hidden => AttentionKernels.Hidden,
                    TileVisibility.Visible => AttentionKernels.Visible,
                    _ => AttentionKernels.Partial,
                };
            }
        }

        return table;
    }

    internal KernelSet<TElement, TLoad> Kernels<TElement, TLoad>()
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        if (!_kernels.TryGetValue(typeof(TLoad), out object? set))
        {
            set = new KernelSet<TElement, TLoad>(_accelerator);
            _kernels[typeof(TLoad)] = set;
        }

        return (KernelSet<TElement, TLoad>)set;
    }

    internal void LaunchForward<TElement, TLoad>(
        AttentionParams p, ArrayView<TElement> q, ArrayView<TElement> k, ArrayView<TElement> v, ArrayView<long> qPos, ArrayView<long> kPos,
        ArrayView<int> qDoc, ArrayView<int> kDoc, ArrayView<byte> tiles, ArrayView<float> o, ArrayView<float> lse)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        var config = new KernelConfig(
            p.QueryTiles * p.QueryHeads,
            _groupSize,
            SharedMemoryConfig.RequestDynamic<float>(AttentionKernels.ForwardSharedFloats(p.HeadDim, p.KeyTile)));
        Kernels<TElement, TLoad>().Forward(config, p, q, k, v, qPos, kPos, qDoc, kDoc, tiles, o, lse);
    }

    internal void LaunchDecode<TElement, TLoad>(
        AttentionParams p, ArrayView<TElement> q, ArrayView<TElement> k, ArrayView<TElement> v, ArrayView<long> qPos, ArrayView<long> kPos,
        ArrayView<int> qDoc, ArrayView<int> kDoc, ArrayView<float> partialO, ArrayView<float> partialL, ArrayView<float> o, ArrayView<float> lse)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        int rows = p.QueryTile;
        var config = new KernelConfig(
            p.QueryTiles * rows,
            _groupSize,
            SharedMemoryConfig.RequestDynamic<float>(AttentionKernels.DecodeSharedFloats(p.HeadDim)));
        Kernels<TElement, TLoad>().Decode(config, p, q, k, v, qPos, kPos, qDoc, kDoc, partialO, partialL);
        _merge(new KernelConfig(rows, MergeGroup(p.HeadDim)), rows, p.HeadDim, p.QueryTiles, partialO, partialL, o, lse);
    }

    private int MergeGroup(int headDim) => Math.Min(_groupSize, headDim);

    private static void Upload<T>(ArrayView<T> target, ReadOnlySpan<T> source)
        where T : unmanaged
    {
        if (!source.IsEmpty)
        {
            target.SubView(0, source.Length).CopyFromCPU(ref MemoryMarshal.GetReference(source), source.Length);
        }
    }

    private static void Upload<T>(ArrayView<T> target, ReadOnlySpan<T> source, AcceleratorStream stream)
        where T : unmanaged
    {
        if (!source.IsEmpty)
        {
            target.SubView(0, source.Length).CopyFromCPU(stream, ref MemoryMarshal.GetReference(source), source.Length);
        }
    }

    private Call Prepare<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
        Span<float> output, Span<float> logSumExp, AttentionOptions? options, IKeptKeyValue? kept)
        where T : unmanaged
    {
        // The CPU path's checks in the CPU path's order, so that bad input fails the same way on either backend.
        options ??= AttentionOptions.Default;
        Attention.ValidateCall(query, key, value, shape, output, logSumExp);
        float scale = options.ResolveScale(shape.HeadDim);
        options.ResolveThreads();
        ResolvedTokens resolved = tokens.Resolve(shape, mask);
        KeptKeyValue? ours = null;
        if (kept is not null)
        {
            ours = kept as KeptKeyValue;
            if (ours is null || ours.Owner != this)
            {
                throw new ArgumentException("kept was not made by this backend's Keep", nameof(kept));
            }

            if (ours.ElementType != typeof(T))
            {
                throw new ArgumentException($"kept holds {ours.ElementType.Name} elements, the call's storage dtype is {typeof(T).Name}", nameof(kept));
            }

            if (ours.Elements != shape.KeyValueElements)
            {
                throw new ArgumentException(
                    $"kept holds {ours.Elements} elements of K and of V, expected [Tk, Hkv, d] = [{shape.KeyTokens}, {shape.KeyValueHeads}, {shape.HeadDim}] = {shape.KeyValueElements}",
                    nameof(kept));
            }
        }

        return new Call(shape, mask, scale, resolved, ours);
    }

    private void ForwardAs<TElement, TLoad, T>(Call call, ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, Span<float> output, Span<float> logSumExp)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
        where T : unmanaged
    {
        AttentionParams p = ForwardParams(call.Shape, call.Mask, call.Scale);
        byte[] table = TileTable(p, call.Mask, call.Tokens);
        lock (_gate)
        {
            using var inputs = new CallBuffers<TElement>(this, call, MemoryMarshal.AsBytes(query), MemoryMarshal.AsBytes(key), MemoryMarshal.AsBytes(value));
            using var tiles = _accelerator.Allocate1D(table);
            LaunchForward<TElement, TLoad>(
                p, inputs.Query, inputs.Key, inputs.Value, inputs.QueryPositions, inputs.KeyPositions, inputs.QueryDocuments, inputs.KeyDocuments,
                tiles.View, inputs.Output, inputs.LogSumExp);
            inputs.Download(output, logSumExp);
        }
    }

    private void DecodeAs<TElement, TLoad, T>(Call call, ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, Span<float> output, Span<float> logSumExp)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
        where T : unmanaged
    {
        AttentionParams p = DecodeParams(call.Shape, call.Mask, call.Scale);
        lock (_gate)
        {
            using var inputs = new CallBuffers<TElement>(this, call, MemoryMarshal.AsBytes(query), MemoryMarshal.AsBytes(key), MemoryMarshal.AsBytes(value));
            using var partialO = _accelerator.Allocate1D<float>((long)p.QueryTiles * call.Shape.QueryElements);
            using var partialL = _accelerator.Allocate1D<float>((long)p.QueryTiles * call.Shape.LseElements);
            LaunchDecode<TElement, TLoad>(
                p, inputs.Query, inputs.Key, inputs.Value, inputs.QueryPositions, inputs.KeyPositions, inputs.QueryDocuments, inputs.KeyDocuments,
                partialO.View, partialL.View, inputs.Output, inputs.LogSumExp);
            inputs.Download(output, logSumExp);
        }
    }

    private void Release(KeptKeyValue kept)
    {
        lock (_gate)
        {
            if (!_disposed && _kept.Remove(kept))
            {
                _pool.Return(kept.KeyBuffer);
                _pool.Return(kept.ValueBuffer);
            }
        }
    }

    private sealed record Call(AttentionShape Shape, AttentionMask Mask, float Scale, ResolvedTokens Tokens, KeptKeyValue? Kept);

    /// <summary>The device buffers of one call: Q, positions, document ids, O and LSE, and K and V unless kept. Caller holds the lock.</summary>
    private sealed class CallBuffers<TElement> : IDisposable
        where TElement : unmanaged
    {
        private readonly List<MemoryBuffer> _owned = [];
        private readonly IlgpuBackend _owner;

        public CallBuffers(IlgpuBackend owner, Call call, ReadOnlySpan<byte> query, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
        {
            _owner = owner;
            AttentionShape shape = call.Shape;
            ObjectDisposedException.ThrowIf(owner._disposed, owner);
            Query = Take<TElement>(shape.QueryElements);
            Upload(Query, MemoryMarshal.Cast<byte, TElement>(query));
            if (call.Kept is { } kept)
            {
                Key = kept.KeyBuffer.View.BaseView.Cast<TElement>().SubView(0, kept.Elements);
                Value = kept.ValueBuffer.View.BaseView.Cast<TElement>().SubView(0, kept.Elements);
            }
            else
            {
                Key = Take<TElement>(shape.KeyValueElements);
                Value = Take<TElement>(shape.KeyValueElements);
                Upload(Key, MemoryMarshal.Cast<byte, TElement>(key));
                Upload(Value, MemoryMarshal.Cast<byte, TElement>(value));
            }

            QueryPositions = Take<long>(shape.QueryTokens);
            KeyPositions = Take<long>(shape.KeyTokens);
            Upload(QueryPositions, call.Tokens.QueryPositions.Span);
            Upload(KeyPositions, call.Tokens.KeyPositions.Span);
            QueryDocuments = Take<int>(call.Tokens.QueryDocuments.Length);
            KeyDocuments = Take<int>(call.Tokens.KeyDocuments.Length);
            Upload(QueryDocuments, call.Tokens.QueryDocuments.Span);
            Upload(KeyDocuments, call.Tokens.KeyDocuments.Span);
            Output = Take<float>(shape.QueryElements);
            LogSumExp = Take<float>(shape.LseElements);
        }

        public ArrayView<TElement> Query { get; }

        public ArrayView<TElement> Key { get; }

        public ArrayView<TElement> Value { get; }

        public ArrayView<long> QueryPositions { get; }

        public ArrayView<long> KeyPositions { get; }

        public ArrayView<int> QueryDocuments { get; }

        public ArrayView<int> KeyDocuments { get; }

        public ArrayView<float> Output { get; }

        public ArrayView<float> LogSumExp { get; }

        public void Download(Span<float> output, Span<float> logSumExp)
        {
            _owner._accelerator.Synchronize();
            Output.CopyToCPU(output);
            LogSumExp.CopyToCPU(logSumExp);
        }

        public void Dispose()
        {
            foreach (var buffer in _owned)
            {
                buffer.Dispose();
            }
        }

        /// <summary>A buffer of at least one element (a view of none cannot be a kernel argument on every backend).</summary>
        private ArrayView<T> Take<T>(long elements)
            where T : unmanaged
        {
            var buffer = _owner._accelerator.Allocate1D<T>(Math.Max(1, elements));
            _owned.Add(buffer);
            return buffer.View.BaseView.SubView(0, Math.Max(1, elements));
        }
    }

    /// <summary>A kept KV segment: K and V in two pooled device buffers of the storage dtype.</summary>
    private sealed class KeptKeyValue : IKeptKeyValue
    {
        public KeptKeyValue(IlgpuBackend owner, Type elementType, int elements, MemoryBuffer1D<byte, Stride1D.Dense> key, MemoryBuffer1D<byte, Stride1D.Dense> value)
        {
            Owner = owner;
            ElementType = elementType;
            Elements = elements;
            KeyBuffer = key;
            ValueBuffer = value;
        }

        public IlgpuBackend Owner { get; }

        public Type ElementType { get; }

        public int Elements { get; }

        public long Bytes => KeyBuffer.Length + ValueBuffer.Length;

        public MemoryBuffer1D<byte, Stride1D.Dense> KeyBuffer { get; }

        public MemoryBuffer1D<byte, Stride1D.Dense> ValueBuffer { get; }

        public void Dispose() => Owner.Release(this);

        /// <summary>Frees the buffers outright (the backend is being disposed).</summary>
        public void FreeBuffers()
        {
            KeyBuffer.Dispose();
            ValueBuffer.Dispose();
        }
    }
}

/// <summary>The forward and decode kernels of one storage dtype, compiled when first used.</summary>
internal sealed class KernelSet<TElement, TLoad>
    where TElement : unmanaged
    where TLoad : struct, IElementLoad<TElement>
{
    public KernelSet(Accelerator accelerator)
    {
        Forward = accelerator.LoadStreamKernel<
            AttentionParams, ArrayView<TElement>, ArrayView<TElement>, ArrayView<TElement>, ArrayView<long>, ArrayView<long>,
            ArrayView<int>, ArrayView<int>, ArrayView<byte>, ArrayView<float>, ArrayView<float>>(AttentionKernels.Forward<TElement, TLoad>);
        Decode = accelerator.LoadStreamKernel<
            AttentionParams, ArrayView<TElement>, ArrayView<TElement>, ArrayView<TElement>, ArrayView<long>, ArrayView<long>,
            ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>>(AttentionKernels.DecodePartial<TElement, TLoad>);
    }

    public Action<KernelConfig, AttentionParams, ArrayView<TElement>, ArrayView<TElement>, ArrayView<TElement>, ArrayView<long>, ArrayView<long>, ArrayView<int>, ArrayView<int>, ArrayView<byte>, ArrayView<float>, ArrayView<float>> Forward { get; }

    public Action<KernelConfig, AttentionParams, ArrayView<TElement>, ArrayView<TElement>, ArrayView<TElement>, ArrayView<long>, ArrayView<long>, ArrayView<int>, ArrayView<int>, ArrayView<float>, ArrayView<float>> Decode { get; }
}
