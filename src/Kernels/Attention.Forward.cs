using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels;

public static partial class Attention
{
    /// <summary>Keys per tile: a packed Kᵀ tile of d=128 is 32 KiB, one L1.</summary>
    internal const int KeyTile = 64;

    /// <summary>
    /// Exact attention of every query row over the visible keys, tiled with an online softmax.
    /// Tiles that the mask hides entirely are skipped without reading K or V; partly hidden tiles are masked per
    /// element. Rows that see no key get O = 0 and LSE = −∞. Work is split over KV heads and query tiles; each
    /// row's reduction order is fixed, so the result does not depend on <see cref="AttentionOptions.MaxThreads"/>.
    /// Extra memory per thread is O(tile · d).
    /// </summary>
    /// <param name="query">Q <c>[Tq, Hq, d]</c>.</param>
    /// <param name="key">K <c>[Tk, Hkv, d]</c>.</param>
    /// <param name="value">V <c>[Tk, Hkv, d]</c>.</param>
    /// <param name="tokens">Global positions (and document ids) of the rows; see <see cref="AttentionTokens"/>.</param>
    /// <param name="output">O <c>[Tq, Hq, d]</c>, written.</param>
    /// <param name="logSumExp">LSE <c>[Tq, Hq]</c> = ln Σ exp(scale · q·k) over visible keys, written.</param>
    public static void Forward<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        AttentionMask mask,
        scoped AttentionTokens tokens,
        Span<float> output,
        Span<float> logSumExp,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        ValidateCall(query, key, value, shape, output, logSumExp);
        ForwardHeads(query, key, value, shape, mask, tokens, output, logSumExp, options, 0, shape.KeyValueHeads);
    }

    /// <summary>
    /// <see cref="Forward{T}"/> for the KV heads <paramref name="firstKvHead"/>..+<paramref name="kvHeads"/> only: O is
    /// <c>[Tq, kvHeads · G, d]</c> and LSE <c>[Tq, kvHeads · G]</c>, the query heads of those KV heads in order. Lengths
    /// are the caller's to check.
    /// </summary>
    internal static void ForwardHeads<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        AttentionMask mask,
        scoped AttentionTokens tokens,
        Span<float> output,
        Span<float> logSumExp,
        AttentionOptions? options,
        int firstKvHead,
        int kvHeads)
        where T : unmanaged
    {
        options ??= AttentionOptions.Default;
        float scale = options.ResolveScale(shape.HeadDim);
        int threads = options.ResolveThreads();
        ResolvedTokens resolved = tokens.Resolve(shape, mask);
        if (shape.QueryTokens == 0)
        {
            return;
        }

        unsafe
        {
            fixed (T* q = query, k = key, v = value)
            fixed (float* o = output, lse = logSumExp)
            {
                var job = new FlashForwardJob<T>(
                    q, k, v, o, lse, shape, mask, resolved, scale * Log2E, options.ResolveSimd(), options.PackBudgetBytes, firstKvHead, kvHeads);
                job.Run(threads);
            }
        }
    }
}

/// <summary>
/// One flash-attention forward call: the work items are (KV head, query tile); each stacks the query rows of all
/// the heads of its group so that a packed K/V tile serves the whole group (GQA packs once, not G times). When one
/// KV head's packed tiles fit <see cref="AttentionOptions.PackBudgetBytes"/>, the call goes in phases of as many
/// heads as fit: every visible tile of the phase's heads is packed once (in parallel), then all their query tiles run
/// against the shared tiles; otherwise each item packs the tiles it needs. Both give the same bits. A call may cover a
/// range of the KV heads only (the retrieval rule attends each KV head's own blocks): O and LSE then hold those heads' rows.
/// </summary>
internal sealed unsafe class FlashForwardJob<T>
    where T : unmanaged
{
    private readonly T* _q;
    private readonly T* _k;
    private readonly T* _v;
    private readonly float* _o;
    private readonly float* _lse;
    private readonly AttentionShape _shape;
    private readonly AttentionMask _mask;
    private readonly ResolvedTokens _tokens;
    private readonly float _scaleLog2;
    private readonly SimdLevel _level;
    private readonly int _paddedDim;
    private readonly int _queryTile;
    private readonly int _queryTiles;
    private readonly TileRange[] _keyRanges;
    private readonly TileRange _allQueries;
    private readonly int _headsPerPhase;
    private readonly int _firstKvHead;
    private readonly int _kvHeads;

    /// <summary>Rows of the micro-kernel's main block, the grain at which a causal diagonal is cut.</summary>
    private const int RowBlock = 6;
    private float* _packed;
    private int _phaseHead;
    private int _phaseHeads;

    public FlashForwardJob(
        T* q, T* k, T* v, float* o, float* lse, AttentionShape shape, AttentionMask mask, ResolvedTokens tokens, float scaleLog2, SimdLevel level, long packBudgetBytes,
        int firstKvHead, int kvHeads)
    {
        _firstKvHead = firstKvHead;
        _kvHeads = kvHeads;
        _q = q;
        _k = k;
        _v = v;
        _o = o;
        _lse = lse;
        _shape = shape;
        _mask = mask;
        _tokens = tokens;
        _scaleLog2 = scaleLog2;
        _level = level;
        _paddedDim = Attention.RoundUp(shape.HeadDim, 8);

        int keyTiles = (shape.KeyTokens + Attention.KeyTile - 1) / Attention.KeyTile;
        _keyRanges = new TileRange[keyTiles];
        for (int t = 0; t < keyTiles; t++)
        {
            int start = t * Attention.KeyTile;
            _keyRanges[t] = tokens.KeyRange(start, Math.Min(Attention.KeyTile, shape.KeyTokens - start));
        }

        // Stacked rows per item: about 120 (60 for d > 128) when each head's tiles are packed once for the call, which
        // keeps the wasted half-tiles on a causal diagonal small; about 240 (120) when each item packs its own tiles,
        // so a tile is packed half as often. Either way Q, the accumulator, S and the K/V tiles fit in L2, and a
        // multiple of 6 feeds the 6-row micro-kernel without remainder rows.
        long headBytes = (long)keyTiles * PackedTileFloats * sizeof(float);
        bool fitsBudget = headBytes <= packBudgetBytes;
        int rowTarget = (shape.HeadDim > 128 ? 60 : 120) * (fitsBudget ? 1 : 2);
        _queryTile = Math.Clamp(rowTarget / shape.GroupSize, 1, Math.Max(1, shape.QueryTokens));
        _queryTiles = (shape.QueryTokens + _queryTile - 1) / _queryTile;
        _headsPerPhase = fitsBudget && _queryTiles > 1 ? (int)Math.Min(kvHeads, packBudgetBytes / headBytes) : 0;
        _allQueries = tokens.QueryRange(0, shape.QueryTokens);
    }

    public int ItemCount => _queryTiles * _kvHeads;

    private int PackedTileFloats => 2 * Attention.KeyTile * _paddedDim;

    public void Run(int threads)
    {
        // A phase has only its heads' query tiles to spread over the threads.
        if (_headsPerPhase == 0 || _queryTiles * _headsPerPhase < threads)
        {
            WorkQueue.Run(ItemCount, threads, RunItem);
            return;
        }

        float[] packed = LargeBuffers<float>.Pool.Rent(_headsPerPhase * _keyRanges.Length * PackedTileFloats);
        GCHandle pin = GCHandle.Alloc(packed, GCHandleType.Pinned);
        try
        {
            _packed = (float*)pin.AddrOfPinnedObject();
            int endHead = _firstKvHead + _kvHeads;
            for (_phaseHead = _firstKvHead; _phaseHead < endHead; _phaseHead += _headsPerPhase)
            {
                _phaseHeads = Math.Min(_headsPerPhase, endHead - _phaseHead);
                WorkQueue.Run(_phaseHeads * _keyRanges.Length, threads, PackTile);
                WorkQueue.Run(_queryTiles * _phaseHeads, threads, RunPhaseItem);
            }
        }
        finally
        {
            _packed = null;
            pin.Free();
            LargeBuffers<float>.Pool.Return(packed);
        }
    }

    /// <summary>Where tile <paramref name="tile"/> of KV head <paramref name="kvHead"/> of this phase is packed.</summary>
    private float* PackedTile(int kvHead, int tile) =>
        _packed + (((long)(kvHead - _phaseHead) * _keyRanges.Length) + tile) * PackedTileFloats;

    /// <summary>Packs tile (head of the phase, key tile) into the shared buffer, unless no query of the call can see it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PackTile(int item)
    {
        int kvHead = _phaseHead + (item / _keyRanges.Length);
        int tile = item % _keyRanges.Length;
        if (_mask.Classify(_allQueries, _keyRanges[tile]) == TileVisibility.Hidden)
        {
            return;
        }

        int k0 = tile * Attention.KeyTile;
        float* kt = PackedTile(kvHead, tile);
        ForwardScratch scratch = ForwardScratch.For(1, _paddedDim);
        PackKeyValueTile(kvHead, k0, Math.Min(Attention.KeyTile, _shape.KeyTokens - k0), kt, kt + (Attention.KeyTile * _paddedDim), scratch.Row);
    }

    // Items go head by head, so the threads work through one head's K/V tiles together and share them in cache (f32
    // T = 4096, 8 heads, 2 threads: 6% faster, full and causal, than every head's tile q before any head's q − 1);
    // within a head, largest query tiles first: under causal masks later tiles carry more work, so they are not last.
    private void RunPhaseItem(int item) => RunTile(_queryTiles - 1 - (item % _queryTiles), _phaseHead + (item / _queryTiles));

    private void RunItem(int item) => RunTile(_queryTiles - 1 - (item % _queryTiles), _firstKvHead + (item / _queryTiles));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RunTile(int queryTile, int kvHead)
    {
        int q0 = queryTile * _queryTile;
        int queryRows = Math.Min(_queryTile, _shape.QueryTokens - q0);
        int group = _shape.GroupSize;
        int rows = group * queryRows;
        int d = _shape.HeadDim;
        int dp = _paddedDim;
        const int Bc = Attention.KeyTile;

        ForwardScratch scratch = ForwardScratch.For(rows, dp);
        float* qs = scratch.Queries;
        float* acc = scratch.Accumulator;
        float* s = scratch.Scores;
        float* m = scratch.RowMax;
        float* l = scratch.RowSum;
        long[] rowPositions = scratch.RowPositions;
        int[] rowDocuments = scratch.RowDocuments;

        int qStride = _shape.QueryHeads * d;
        // The item's query rows (its G heads' slices, one run per row) are asked for all at once; widened row by row
        // without that, each row would wait for memory in turn.
        var queries = new PrefetchWalk(_q + ((long)q0 * qStride) + (kvHead * group * d), queryRows, group * d * sizeof(T), (long)qStride * sizeof(T));
        queries.Next(queries.Lines);
        for (int g = 0; g < group; g++)
        {
            int head = (kvHead * group) + g;
            for (int i = 0; i < queryRows; i++)
            {
                int r = (g * queryRows) + i;
                var source = new ReadOnlySpan<T>(_q + ((long)(q0 + i) * qStride) + (head * d), d);
                var destination = new Span<float>(qs + ((long)r * dp), dp);
                Widen.ToSingleScaled(source, _scaleLog2, destination);
                destination[d..].Clear();
                rowPositions[r] = _tokens.QueryPositions.Span[q0 + i];
                rowDocuments[r] = _tokens.HasDocuments ? _tokens.QueryDocuments.Span[q0 + i] : 0;
            }
        }

        new Span<float>(acc, rows * dp).Clear();
        new Span<float>(l, rows).Clear();
        new Span<float>(m, rows).Fill(float.NegativeInfinity);

        TileRange queryRange = _tokens.QueryRange(q0, queryRows);
        for (int tile = 0; tile < _keyRanges.Length; tile++)
        {
            TileVisibility visibility = _mask.Classify(queryRange, _keyRanges[tile]);
            if (visibility == TileVisibility.Hidden)
            {
                continue;
            }

            int k0 = tile * Bc;
            int keys = Math.Min(Bc, _shape.KeyTokens - k0);
            int paddedKeys = Attention.RoundUp(keys, 8);
            float* kt = scratch.KeysTransposed;
            float* vp = scratch.Values;
            if (_packed is null)
            {
                PackKeyValueTile(kvHead, k0, keys, kt, vp, scratch.Row);
            }
            else
            {
                kt = PackedTile(kvHead, tile);
                vp = kt + (Bc * dp);
            }

            // On a causal diagonal each block of 6 rows sees only the keys up to its last position: S, its mask, the
            // softmax and P·V stop there (8 columns at a time), which halves the work of a diagonal tile. The columns
            // left out are hidden keys, whose probabilities are 0, so every row's max, sum and output keep their bits.
            bool diagonal = visibility == TileVisibility.Partial && ScoreMask.HasColumnLimits(_tokens, k0, keys);
            if (diagonal)
            {
                for (int r0 = 0; r0 < rows; r0 += RowBlock)
                {
                    int blockRows = Math.Min(RowBlock, rows - r0);
                    int end = ScoreMask.VisibleEnd(_mask, _tokens, k0, keys, rowPositions, r0, blockRows);
                    if (end > 0)
                    {
                        int width = Attention.RoundUp(end, 8);
                        float* block = s + ((long)r0 * Bc);
                        MicroGemm.Run(_level, qs + ((long)r0 * dp), dp, kt, Bc, block, Bc, blockRows, width, dp, accumulate: false);
                        ScoreMask.Apply(_mask, _tokens, block, Bc, blockRows, k0, Math.Min(keys, width), rowPositions.AsSpan(r0, blockRows), rowDocuments.AsSpan(r0, blockRows));
                        ScoreMask.HidePadding(block, Bc, blockRows, keys, width);
                        OnlineSoftmax.Update(_level, block, Bc, blockRows, width, m + r0, l + r0, acc + ((long)r0 * dp), dp, dp);
                        MicroGemm.Run(_level, block, Bc, vp, dp, acc + ((long)r0 * dp), dp, blockRows, dp, end, accumulate: true);
                    }
                }
            }
            else
            {
                MicroGemm.Run(_level, qs, dp, kt, Bc, s, Bc, rows, paddedKeys, dp, accumulate: false);
                if (visibility == TileVisibility.Partial)
                {
                    ScoreMask.Apply(_mask, _tokens, s, Bc, rows, k0, keys, rowPositions, rowDocuments);
                }

                ScoreMask.HidePadding(s, Bc, rows, keys, paddedKeys);
                OnlineSoftmax.Update(_level, s, Bc, rows, paddedKeys, m, l, acc, dp, dp);
                MicroGemm.Run(_level, s, Bc, vp, dp, acc, dp, rows, dp, keys, accumulate: true);
            }
        }

        int outputHeads = _kvHeads * group;
        for (int g = 0; g < group; g++)
        {
            int head = ((kvHead - _firstKvHead) * group) + g;
            for (int i = 0; i < queryRows; i++)
            {
                int r = (g * queryRows) + i;
                long rowIndex = ((long)(q0 + i) * outputHeads) + head;
                OnlineSoftmax.Finish(acc + ((long)r * dp), m[r], l[r], _o + (rowIndex * d), d, _lse + rowIndex);
            }
        }
    }

    /// <summary>
    /// Widens one K/V tile of a KV head into Kᵀ <c>[dp × Bc]</c> and V <c>[keys × dp]</c>, zero-padded to dp.
    /// V is copied even when it is f32: read in place, its rows sit Hkv·d floats apart (4 KiB at 8 × 128), and
    /// 64 such rows alias in L1; measured 15% slower at d = 128.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void PackKeyValueTile(int kvHead, int k0, int keys, float* kt, float* vp, float* rows)
    {
        const int Bc = Attention.KeyTile;
        int d = _shape.HeadDim;
        int dp = _paddedDim;
        int kvStride = _shape.KeyValueHeads * d;
        int j = 0;
        if (Avx.IsSupported)
        {
            // Eight keys at a time: 8 × 8 blocks transposed in registers, so Kᵀ is written a vector at a time.
            float** source = stackalloc float*[8];
            for (; j + 8 <= keys; j += 8)
            {
                for (int i = 0; i < 8; i++)
                {
                    source[i] = KeyRow((k0 + j + i) * (long)kvStride + (kvHead * d), rows + (i * dp));
                }

                int c = 0;
                for (; c + 8 <= d; c += 8)
                {
                    Transpose8x8(source, c, kt + (c * Bc) + j, Bc);
                }

                for (; c < d; c++)
                {
                    for (int i = 0; i < 8; i++)
                    {
                        kt[(c * Bc) + j + i] = source[i][c];
                    }
                }
            }
        }

        for (; j < keys; j++)
        {
            float* krow = KeyRow((k0 + j) * (long)kvStride + (kvHead * d), rows);
            for (int c = 0; c < d; c++)
            {
                kt[(c * Bc) + j] = krow[c];
            }
        }

        // Q's padded columns are zero, but 0 · NaN is not: keep the padded rows of Kᵀ clean.
        for (int c = d; c < dp; c++)
        {
            new Span<float>(kt + (c * Bc), Bc).Clear();
        }

        for (j = 0; j < keys; j++)
        {
            long offset = ((long)(k0 + j) * kvStride) + (kvHead * d);
            var vDestination = new Span<float>(vp + ((long)j * dp), dp);
            Widen.ToSingle(new ReadOnlySpan<T>(_v + offset, d), vDestination);
            vDestination[d..].Clear();
        }
    }

    /// <summary>A K row as f32: in place for f32 storage, else widened into <paramref name="buffer"/>.</summary>
    private float* KeyRow(long offset, float* buffer)
    {
        if (typeof(T) == typeof(float))
        {
            return (float*)(_k + offset);
        }

        Widen.ToSingle(new ReadOnlySpan<T>(_k + offset, _shape.HeadDim), new Span<float>(buffer, _shape.HeadDim));
        return buffer;
    }

    /// <summary>Columns c..c+7 of eight rows become rows c..c+7 (eight floats each) of the destination.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Transpose8x8(float** rows, int c, float* destination, int stride)
    {
        Vector256<float> r0 = Avx.LoadVector256(rows[0] + c);
        Vector256<float> r1 = Avx.LoadVector256(rows[1] + c);
        Vector256<float> r2 = Avx.LoadVector256(rows[2] + c);
        Vector256<float> r3 = Avx.LoadVector256(rows[3] + c);
        Vector256<float> r4 = Avx.LoadVector256(rows[4] + c);
        Vector256<float> r5 = Avx.LoadVector256(rows[5] + c);
        Vector256<float> r6 = Avx.LoadVector256(rows[6] + c);
        Vector256<float> r7 = Avx.LoadVector256(rows[7] + c);
        Vector256<float> t0 = Avx.UnpackLow(r0, r1);
        Vector256<float> t1 = Avx.UnpackHigh(r0, r1);
        Vector256<float> t2 = Avx.UnpackLow(r2, r3);
        Vector256<float> t3 = Avx.UnpackHigh(r2, r3);
        Vector256<float> t4 = Avx.UnpackLow(r4, r5);
        Vector256<float> t5 = Avx.UnpackHigh(r4, r5);
        Vector256<float> t6 = Avx.UnpackLow(r6, r7);
        Vector256<float> t7 = Avx.UnpackHigh(r6, r7);
        Vector256<float> u0 = Avx.Shuffle(t0, t2, 0x44);
        Vector256<float> u1 = Avx.Shuffle(t0, t2, 0xEE);
        Vector256<float> u2 = Avx.Shuffle(t1, t3, 0x44);
        Vector256<float> u3 = Avx.Shuffle(t1, t3, 0xEE);
        Vector256<float> u4 = Avx.Shuffle(t4, t6, 0x44);
        Vector256<float> u5 = Avx.Shuffle(t4, t6, 0xEE);
        Vector256<float> u6 = Avx.Shuffle(t5, t7, 0x44);
        Vector256<float> u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(destination, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(destination + stride, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(destination + (2 * stride), Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(destination + (3 * stride), Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(destination + (4 * stride), Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(destination + (5 * stride), Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(destination + (6 * stride), Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(destination + (7 * stride), Avx.Permute2x128(u3, u7, 0x31));
    }
}

/// <summary>
/// Per-thread working memory of the forward kernel, on the pinned heap so tiles are addressed by pointer, kept
/// across calls so the hot path allocates nothing. Size is O(rows · d + tile · d).
/// </summary>
internal sealed unsafe class ForwardScratch
{
    [ThreadStatic]
    private static ForwardScratch? t_current;

    private readonly float[] _buffer;

    private ForwardScratch(int rows, int paddedDim, int tileWidth)
    {
        Rows = rows;
        PaddedDim = paddedDim;
        TileWidth = tileWidth;
        const int Bc = Attention.KeyTile;

        // Every section starts on a 64-byte line: a zmm load that straddles two lines costs two.
        int rowBlock = Line(rows * paddedDim);
        int total = (2 * rowBlock) + Line(rows * Bc) + (2 * Line(Bc * tileWidth)) + (2 * Line(rows)) + (8 * paddedDim) + FloatsPerLine;
        _buffer = GC.AllocateArray<float>(total, pinned: true);
        float* p = (float*)Unsafe.AsPointer(ref _buffer[0]);
        p += (FloatsPerLine - (int)((nuint)p % 64 / sizeof(float))) % FloatsPerLine;
        Queries = p;
        Accumulator = p += rowBlock;
        Scores = p += rowBlock;
        KeysTransposed = p += Line(rows * Bc);
        Values = p += Line(Bc * tileWidth);
        RowMax = p += Line(Bc * tileWidth);
        RowSum = p += Line(rows);
        Row = p + Line(rows);
        RowPositions = new long[rows];
        RowDocuments = new int[rows];
    }

    private const int FloatsPerLine = 16;

    public int Rows { get; }

    public int PaddedDim { get; }

    /// <summary>Floats per key row of the K and V tile buffers (dp for one head; decode stacks several heads).</summary>
    public int TileWidth { get; }

    public float* Queries { get; }

    public float* Accumulator { get; }

    public float* Scores { get; }

    /// <summary>Kᵀ <c>[dp × Bc]</c> in the forward kernel; K rows <c>[Bc × TileWidth]</c> in decode.</summary>
    public float* KeysTransposed { get; }

    /// <summary>V rows <c>[Bc × TileWidth]</c>.</summary>
    public float* Values { get; }

    public float* RowMax { get; }

    public float* RowSum { get; }

    /// <summary>Eight widened rows of dp floats.</summary>
    public float* Row { get; }

    public long[] RowPositions { get; }

    public int[] RowDocuments { get; }

    private static int Line(int floats) => Attention.RoundUp(floats, FloatsPerLine);

    public static ForwardScratch For(int rows, int paddedDim, int tileWidth = 0)
    {
        tileWidth = Math.Max(tileWidth, paddedDim);
        ForwardScratch? current = t_current;
        if (current is null || current.Rows < rows || current.PaddedDim < paddedDim || current.TileWidth < tileWidth)
        {
            current = new ForwardScratch(
                Math.Max(rows, current?.Rows ?? 0), Math.Max(paddedDim, current?.PaddedDim ?? 0), Math.Max(tileWidth, current?.TileWidth ?? 0));
            t_current = current;
        }

        return current;
    }
}
