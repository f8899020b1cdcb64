using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels;

public static partial class Attention
{
    /// <summary>Keys per decode chunk. Fixed (not derived from the thread count) so the merge order, and so the result, never changes.</summary>
    internal const int DecodeChunk = 1024;

    /// <summary>
    /// Attention for a few query rows against a long K/V (decode): the keys are cut into fixed chunks of
    /// <see cref="DecodeChunk"/>, each (chunk, KV head) is computed on some thread as a partial (O, LSE) — split-K,
    /// all query heads of the KV head in one pass over its K and V — and the partials are merged by LSE in chunk
    /// order. Decode reads every K and V byte once, so it is bound by memory bandwidth. Same contract as <see cref="Forward{T}"/>; the result does not
    /// depend on the thread count. Extra memory: one partial per chunk, O(Tk / chunk · Tq · Hq · d).
    /// </summary>
    public static void Decode<T>(
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
        options ??= AttentionOptions.Default;
        ValidateCall(query, key, value, shape, output, logSumExp);
        float scale = options.ResolveScale(shape.HeadDim);
        int threads = options.ResolveThreads();
        unsafe
        {
            // The job views the tokens in place (ResolvePinned) for the whole call.
            fixed (long* queryPositions = tokens.QueryPositions, keyPositions = tokens.KeyPositions)
            fixed (int* queryDocuments = tokens.QueryDocuments, keyDocuments = tokens.KeyDocuments)
            {
                ResolvedTokens resolved = tokens.ResolvePinned(shape, mask);
                if (shape.QueryTokens > 0)
                {
                    Run(query, key, value, shape, mask, resolved, output, logSumExp, scale * Log2E, options.ResolveSimd(), threads);
                }
            }
        }
    }

    private static void Run<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        AttentionMask mask,
        ResolvedTokens resolved,
        Span<float> output,
        Span<float> logSumExp,
        float scaleLog2,
        SimdLevel level,
        int threads)
        where T : unmanaged
    {
        int chunks = Math.Max(1, (shape.KeyTokens + DecodeChunk - 1) / DecodeChunk);
        int rowElements = (int)shape.QueryElements;
        int rowCount = (int)shape.LseElements;
        float[] partialO = ArrayPool<float>.Shared.Rent(chunks * rowElements);
        float[] partialLse = ArrayPool<float>.Shared.Rent(chunks * rowCount);
        try
        {
            unsafe
            {
                fixed (T* q = query, k = key, v = value)
                fixed (float* po = partialO, plse = partialLse)
                {
                    var job = new DecodeJob<T>(q, k, v, po, plse, shape, mask, resolved, scaleLog2, level, chunks, threads);
                    WorkQueue.Run(job.ItemCount, threads, job.RunItem);
                }
            }

            partialO.AsSpan(0, rowElements).CopyTo(output);
            partialLse.AsSpan(0, rowCount).CopyTo(logSumExp);
            for (int c = 1; c < chunks; c++)
            {
                MergePartials(
                    output,
                    logSumExp,
                    partialO.AsSpan(c * rowElements, rowElements),
                    partialLse.AsSpan(c * rowCount, rowCount),
                    output,
                    logSumExp,
                    shape.HeadDim);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(partialO);
            ArrayPool<float>.Shared.Return(partialLse);
        }
    }
}

/// <summary>
/// One decode call: work items are (run of consecutive key chunks, block of KV heads), each writing the partials (O,
/// LSE) of its chunks for the query rows of those heads. A block is every KV head when there are enough chunks to keep
/// the threads busy, so each item reads whole K/V rows, a contiguous stream, rather than one head's slice of every row
/// (measured here: 7 GB/s for per-head slices against 12 for whole rows, one thread); short keys fall back to one head
/// per item. Runs shrink toward the end of the keys (<see cref="RunStarts"/>): within a run the software prefetch flows
/// on from one chunk's last tile into the next chunk's first, where each item's first tile waits for memory. Per tile of
/// keys: scores, on Vector512 in blocks of 4 keys × 4 rows of a head (each key row widened once for the 4 rows, the
/// 16 sums folded together; see <see cref="Dots4x4{TK}"/>), elsewhere one dot product per (key, row) with the key
/// row read once per 4 rows; the online-softmax step; O += P·V on the micro-kernel. f32 and bf16 K and V are read in place (bf16 widened in registers, see
/// <see cref="WideLoad"/>); f16, and V rows whose d is not a multiple of 8, are widened once per tile into scratch.
/// No transposed copy of K, which a handful of rows would not amortize. Every head's partial is computed the same way
/// whatever the block, so neither the thread count nor the block changes a bit.
/// </summary>
internal sealed unsafe class DecodeJob<T>
    where T : unmanaged
{
    private const int Block = Attention.KeyTile;

    private readonly T* _q;
    private readonly T* _k;
    private readonly T* _v;
    private readonly float* _partialO;
    private readonly float* _partialLse;
    private readonly AttentionShape _shape;
    private readonly AttentionMask _mask;
    private readonly ResolvedTokens _tokens;
    private readonly float _scaleLog2;
    private readonly SimdLevel _level;
    private readonly TileRange _queryRange;
    private readonly int _headsPerItem;
    private readonly int[] _runStarts;

    public DecodeJob(
        T* q, T* k, T* v, float* partialO, float* partialLse, AttentionShape shape, AttentionMask mask, ResolvedTokens tokens, float scaleLog2, SimdLevel level, int chunks, int threads)
    {
        _q = q;
        _k = k;
        _v = v;
        _partialO = partialO;
        _partialLse = partialLse;
        _shape = shape;
        _mask = mask;
        _tokens = tokens;
        _scaleLog2 = scaleLog2;
        _level = level;
        _queryRange = tokens.QueryRange(0, shape.QueryTokens);
        _headsPerItem = chunks >= 4 * threads ? shape.KeyValueHeads : 1;
        _runStarts = RunStarts(chunks, _headsPerItem == shape.KeyValueHeads ? threads : 0);
    }

    public int ItemCount => (_runStarts.Length - 1) * (_shape.KeyValueHeads / _headsPerItem);

    /// <summary>
    /// Where each item's run of chunks starts (and, last, the end): runs shrink as the work left does, each
    /// 1 / (2 · threads) of what is left, down to one chunk, so the threads finish within about a chunk of each other
    /// (measured with 16 equal runs of 16 chunks, bf16 Tk 262144 on 2 threads: one thread idle 0.5–1 ms of a 19 ms call
    /// at the end, and up to a run's 2.3 ms when the pool started the second worker late). A long run keeps the
    /// software prefetch flowing from one chunk into the next; only an item's first tile waits for memory. With
    /// <paramref name="threads"/> 0, one chunk per run.
    /// </summary>
    private static int[] RunStarts(int chunks, int threads)
    {
        var starts = new List<int> { 0 };
        for (int start = 0; start < chunks;)
        {
            int left = chunks - start;
            start += threads == 0 ? 1 : Math.Max(1, (left + (2 * threads) - 1) / (2 * threads));
            starts.Add(start);
        }

        return [.. starts];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void RunItem(int item)
    {
        int blocks = _shape.KeyValueHeads / _headsPerItem;
        int firstChunk = _runStarts[item / blocks];
        int endChunk = _runStarts[(item / blocks) + 1];
        int firstHead = (item % blocks) * _headsPerItem;
        int heads = _headsPerItem;
        int d = _shape.HeadDim;
        int dp = Attention.RoundUp(d, 8);
        int tq = _shape.QueryTokens;
        int group = _shape.GroupSize;
        int headRows = group * tq;
        int rows = heads * headRows;
        int tileWidth = heads * dp;
        ForwardScratch scratch = ForwardScratch.For(rows, dp, tileWidth);
        float* qs = scratch.Queries;
        float* acc = scratch.Accumulator;
        float* s = scratch.Scores;
        float* m = scratch.RowMax;
        float* l = scratch.RowSum;
        long[] rowPositions = scratch.RowPositions;
        int[] rowDocuments = scratch.RowDocuments;

        // Row r = (head − firstHead) · G·Tq + g · Tq + i holds query token i of query head (head · G + g).
        for (int h = 0; h < heads; h++)
        {
            for (int g = 0; g < group; g++)
            {
                int queryHead = ((firstHead + h) * group) + g;
                for (int i = 0; i < tq; i++)
                {
                    int r = (h * headRows) + (g * tq) + i;
                    Widen.ToSingleScaled(
                        new ReadOnlySpan<T>(_q + (((long)i * _shape.QueryHeads) + queryHead) * d, d), _scaleLog2, new Span<float>(qs + ((long)r * dp), d));
                    rowPositions[r] = _tokens.QueryPositions.Span[i];
                    rowDocuments[r] = _tokens.HasDocuments ? _tokens.QueryDocuments.Span[i] : 0;
                }
            }
        }

        int itemStart = firstChunk * Attention.DecodeChunk;
        int itemEnd = Math.Min(_shape.KeyTokens, endChunk * Attention.DecodeChunk);
        int kvStride = _shape.KeyValueHeads * d;
        int blockElements = heads * d;

        // f32 and bf16 V rows are read in place when they need no padding to the micro-kernel's 8 columns.
        bool valuesInPlace = typeof(T) != typeof(Half) && dp == d;

        // Decode streams K and V from memory, and the hardware prefetchers do little for its pattern (four key rows
        // 2 KiB apart read a head's slice at a time; V read down a column of rows), so every line is asked for in
        // software, a tile ahead and a few lines at a time inside the loops that do the arithmetic: bursts of
        // requests stall on the miss buffers, and so does a phase that asks for nothing. On the streamed path
        // (Vector512, contiguous rows of all of the item's heads, V in place, 4-row blocks) scoring asks for the next
        // tile's K and P·V for the next tile's V; elsewhere scoring asks for both this tile's V and the next tile's K
        // (see ScoreTile). Chunks start on a tile (DecodeChunk is a multiple of Block), so the tile after a chunk's
        // last is the next chunk's first. The item's first tile's K has no tile before it to be asked for during: it
        // is asked for now.
        int rowBytes = blockElements * sizeof(T);
        long strideBytes = kvStride * sizeof(T);
        bool streamed = _level == SimdLevel.Vector512 && Avx512F.IsSupported && valuesInPlace && rowBytes == strideBytes
            && d % 64 == 0 && headRows % 4 == 0;
        var firstKeys = new PrefetchWalk(_k + ((long)itemStart * kvStride) + (firstHead * d), Math.Min(Block, itemEnd - itemStart), rowBytes, strideBytes);
        firstKeys.Next(firstKeys.Lines);
        for (int chunk = firstChunk; chunk < endChunk; chunk++)
        {
            new Span<float>(acc, rows * dp).Clear();
            new Span<float>(l, rows).Clear();
            new Span<float>(m, rows).Fill(float.NegativeInfinity);
            int chunkStart = chunk * Attention.DecodeChunk;
            int chunkEnd = Math.Min(_shape.KeyTokens, chunkStart + Attention.DecodeChunk);
            for (int k0 = chunkStart; k0 < chunkEnd; k0 += Block)
            {
                int keys = Math.Min(Block, chunkEnd - k0);
                TileVisibility visibility = _mask.Classify(_queryRange, _tokens.KeyRange(k0, keys));
                if (visibility == TileVisibility.Hidden)
                {
                    continue;
                }

                long tileOffset = ((long)k0 * kvStride) + (firstHead * d);
                int nextKeyRows = Math.Min(Block, itemEnd - k0 - Block);
                var values = streamed && k0 > itemStart ? default : new PrefetchWalk(_v + tileOffset, keys, rowBytes, strideBytes);
                var nextKeys = nextKeyRows > 0 ? new PrefetchWalk(_k + tileOffset + ((long)Block * kvStride), nextKeyRows, rowBytes, strideBytes) : default;

                // f32 and bf16 keys are read in place (bf16 widened in registers); f16 has no fast widening, so its tile
                // is widened once into the scratch buffer.
                if (typeof(T) == typeof(Half))
                {
                    WidenTile(_k + tileOffset, kvStride, keys, heads, scratch.KeysTransposed, tileWidth);
                    ScoreTile(scratch.KeysTransposed, tileWidth, dp, keys, heads, headRows, qs, dp, s, values, nextKeys);
                }
                else
                {
                    ScoreTile(_k + tileOffset, kvStride, d, keys, heads, headRows, qs, dp, s, values, nextKeys);
                }

                if (visibility == TileVisibility.Partial)
                {
                    ScoreMask.Apply(_mask, _tokens, s, Block, rows, k0, keys, rowPositions, rowDocuments);
                }

                int paddedKeys = Attention.RoundUp(keys, 8);
                ScoreMask.HidePadding(s, Block, rows, keys, paddedKeys);

                OnlineSoftmax.Update(_level, s, Block, rows, paddedKeys, m, l, acc, dp, dp);
                if (streamed)
                {
                    // Blocks of 4 rows × 64 columns, each asking for an equal piece of the next tile's V, whole lines per key.
                    int calls = rows / 4 * (d / 64);
                    int lines = nextKeyRows > 0 ? (int)((((long)nextKeyRows * strideBytes / calls) + (keys * PrefetchWalk.LineBytes) - 1) / (keys * PrefetchWalk.LineBytes)) : 0;
                    byte* nextValues = nextKeyRows > 0 ? (byte*)(_v + tileOffset + ((long)Block * kvStride)) : null;
                    byte* valuesEnd = nextKeyRows > 0 ? nextValues + ((long)nextKeyRows * strideBytes) : null;
                    int call = 0;
                    for (int r0 = 0; r0 < rows; r0 += 4)
                    {
                        T* valueColumns = _v + tileOffset + (r0 / headRows * d);
                        for (int c0 = 0; c0 < d; c0 += 64, call++)
                        {
                            byte* piece = nextValues == null ? null : nextValues + ((long)call * keys * lines * PrefetchWalk.LineBytes);
                            MicroGemm.Block4x64(s + (r0 * Block), Block, valueColumns + c0, kvStride, acc + ((long)r0 * dp) + c0, dp, keys, accumulate: true, piece < valuesEnd ? piece : null, lines);
                        }
                    }
                }
                else if (valuesInPlace)
                {
                    for (int h = 0; h < heads; h++)
                    {
                        int r0 = h * headRows;
                        MicroGemm.Run(_level, s + (r0 * Block), Block, _v + tileOffset + (h * d), kvStride, acc + ((long)r0 * dp), dp, headRows, dp, keys, accumulate: true);
                    }
                }
                else
                {
                    float* valueRows = scratch.Values;
                    WidenTile(_v + tileOffset, kvStride, keys, heads, valueRows, tileWidth);
                    for (int h = 0; h < heads; h++)
                    {
                        int r0 = h * headRows;
                        MicroGemm.Run(_level, s + (r0 * Block), Block, valueRows + (h * dp), tileWidth, acc + ((long)r0 * dp), dp, headRows, dp, keys, accumulate: true);
                    }
                }
            }

            FinishChunk(chunk, firstHead, heads, acc, m, l, dp);
        }
    }

    /// <summary>Writes the partials (O, LSE) of <paramref name="chunk"/> for the query rows of the item's heads.</summary>
    private void FinishChunk(int chunk, int firstHead, int heads, float* acc, float* m, float* l, int dp)
    {
        int d = _shape.HeadDim;
        int tq = _shape.QueryTokens;
        int group = _shape.GroupSize;
        int headRows = group * tq;
        long partialRows = _shape.LseElements;
        for (int h = 0; h < heads; h++)
        {
            for (int g = 0; g < group; g++)
            {
                int queryHead = ((firstHead + h) * group) + g;
                for (int i = 0; i < tq; i++)
                {
                    int r = (h * headRows) + (g * tq) + i;
                    long rowIndex = (chunk * partialRows) + ((long)i * _shape.QueryHeads) + queryHead;
                    OnlineSoftmax.Finish(acc + ((long)r * dp), m[r], l[r], _partialO + (rowIndex * d), d, _partialLse + rowIndex);
                }
            }
        }
    }

    /// <summary>
    /// s[r, j] = q_r · k_j for every row of every head of the item; key j of head h at keys + j · keyStride + h · headStride.
    /// Asks for the lines of both prefetch walks evenly over its steps (a block of 4 keys of one head, or one key).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ScoreTile<TK>(TK* keyRows, long keyStride, int headStride, int keys, int heads, int headRows, float* qs, int dp, float* s, PrefetchWalk values, PrefetchWalk nextKeys)
        where TK : unmanaged
    {
        int d = _shape.HeadDim;
        bool blocked = _level == SimdLevel.Vector512 && Avx512F.IsSupported && d % 16 == 0 && headRows >= 4;
        int steps = blocked ? ((keys / 4) * heads) + (keys % 4) : keys;
        int valueLines = (values.Lines + steps - 1) / steps;
        int keyLines = (nextKeys.Lines + steps - 1) / steps;
        int j = 0;
        if (blocked)
        {
            j = ScoreBlocks(keyRows, keyStride, headStride, keys, heads, headRows, qs, dp, s, ref values, ref nextKeys, valueLines, keyLines);
        }

        for (; j < keys; j++)
        {
            values.Next(valueLines);
            nextKeys.Next(keyLines);
            TK* keyRow = keyRows + (j * keyStride);
            for (int h = 0; h < heads; h++)
            {
                int r0 = h * headRows;
                VectorMath.Dots(_level, qs + ((long)r0 * dp), dp, headRows, keyRow + (h * headStride), d, s + (r0 * Block) + j, Block);
            }
        }
    }

    /// <summary>
    /// The Vector512 part of <see cref="ScoreTile{TK}"/>, d a multiple of 16: blocks of 4 keys × 4 rows of a head
    /// (<see cref="Dots4x4{TK}"/>); returns the keys done. Rows left over in a head (G·Tq not a multiple of 4) go the
    /// one-key way, which sums in the same order. When the next tile's K is one contiguous run, each block asks for an
    /// equal piece of it from inside its loop; otherwise both walks take a step per block of a head. A method of its
    /// own with the walks in locals: the JIT keeps them in registers here, where in <see cref="ScoreTile{TK}"/> (four
    /// SIMD paths' worth of inlined code) it kept them on the stack.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int ScoreBlocks<TK>(TK* keyRows, long keyStride, int headStride, int keys, int heads, int headRows, float* qs, int dp, float* s, ref PrefetchWalk values, ref PrefetchWalk nextKeys, int valueLines, int keyLines)
        where TK : unmanaged
    {
        int d = _shape.HeadDim;
        int blockRows = headRows & ~3;
        int steps = d / 16;
        int blocks = keys / 4 * heads * (blockRows / 4);
        byte* keyPrefetch = nextKeys.Run;
        int keyPrefetchLines = keyPrefetch == null || blocks == 0 ? 0 : (nextKeys.Lines + (blocks * steps) - 1) / (blocks * steps);
        byte* keyPrefetchEnd = keyPrefetch == null ? null : keyPrefetch + ((long)nextKeys.Lines * PrefetchWalk.LineBytes);
        long perBlock = (long)keyPrefetchLines * steps * PrefetchWalk.LineBytes;

        // Local copies of the walks, which the JIT keeps in registers (through the references, every step would be a
        // store and a reload).
        PrefetchWalk valueWalk = values;
        PrefetchWalk keyWalk = keyPrefetch == null ? nextKeys : default;
        int j = 0;
        for (; j + 4 <= keys; j += 4)
        {
            TK* keyRow = keyRows + (j * keyStride);
            for (int h = 0; h < heads; h++)
            {
                valueWalk.Next(valueLines);
                keyWalk.Next(keyLines);
                int r0 = h * headRows;
                TK* k0 = keyRow + (h * headStride);
                for (int r = r0; r < r0 + blockRows; r += 4)
                {
                    bool asking = keyPrefetch < keyPrefetchEnd;
                    Dots4x4(qs + ((long)r * dp), dp, k0, keyStride, d, s + (r * Block) + j, asking ? keyPrefetch : null, asking ? keyPrefetchLines : 0);
                    keyPrefetch += perBlock;
                }

                if (blockRows < headRows)
                {
                    ScoreLeftoverRows(k0, keyStride, headRows - blockRows, qs + ((long)(r0 + blockRows) * dp), dp, s + ((r0 + blockRows) * Block) + j);
                }
            }
        }

        values = valueWalk;
        nextKeys = keyWalk;
        return j;
    }

    /// <summary>The rows of a 4-key block that do not fill a block of 4 rows, one key at a time.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ScoreLeftoverRows<TK>(TK* keyRow, long keyStride, int rows, float* qs, int dp, float* s)
        where TK : unmanaged
    {
        for (int jj = 0; jj < 4; jj++)
        {
            VectorMath.Dots(_level, qs, dp, rows, keyRow + (jj * keyStride), _shape.HeadDim, s + jj, Block);
        }
    }

    /// <summary>
    /// s[r · Block + j] = a_r · k_j for 4 rows (lda apart) and 4 keys (keyStride apart), n a multiple of 16, in the
    /// order of <see cref="VectorMath.Dots{TB}"/> (element i into lane i mod 16; upper 8 lanes onto the lower, upper 4
    /// onto the lower 4, (z0 + z1) + (z2 + z3)), so the bits are those of the one-key path and of Vector256. Each key
    /// row is loaded and widened once for the 4 rows, and the 16 sums are folded together: a transposing tree of 15
    /// shuffled adds for all of them rather than a horizontal fold with element extractions per sum. Each step of 16
    /// elements also asks for <paramref name="prefetchLines"/> cache lines from <paramref name="prefetch"/> on.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Dots4x4<TK>(float* a, int lda, TK* k, long keyStride, int n, float* s, byte* prefetch, int prefetchLines)
        where TK : unmanaged
    {
        float* a0 = a;
        float* a1 = a0 + lda;
        float* a2 = a1 + lda;
        float* a3 = a2 + lda;
        TK* k0 = k;
        TK* k1 = k0 + keyStride;
        TK* k2 = k1 + keyStride;
        TK* k3 = k2 + keyStride;

        // cKR: key K, row R.
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        for (int i = 0; i < n; i += 16)
        {
            prefetch = PrefetchWalk.Ask(prefetch, prefetchLines);
            Vector512<float> q0 = Vector512.Load(a0 + i);
            Vector512<float> q1 = Vector512.Load(a1 + i);
            Vector512<float> q2 = Vector512.Load(a2 + i);
            Vector512<float> q3 = Vector512.Load(a3 + i);
            Vector512<float> x = WideLoad.Load16(k0 + i);
            c00 = Vector512.MultiplyAddEstimate(q0, x, c00);
            c01 = Vector512.MultiplyAddEstimate(q1, x, c01);
            c02 = Vector512.MultiplyAddEstimate(q2, x, c02);
            c03 = Vector512.MultiplyAddEstimate(q3, x, c03);
            x = WideLoad.Load16(k1 + i);
            c10 = Vector512.MultiplyAddEstimate(q0, x, c10);
            c11 = Vector512.MultiplyAddEstimate(q1, x, c11);
            c12 = Vector512.MultiplyAddEstimate(q2, x, c12);
            c13 = Vector512.MultiplyAddEstimate(q3, x, c13);
            x = WideLoad.Load16(k2 + i);
            c20 = Vector512.MultiplyAddEstimate(q0, x, c20);
            c21 = Vector512.MultiplyAddEstimate(q1, x, c21);
            c22 = Vector512.MultiplyAddEstimate(q2, x, c22);
            c23 = Vector512.MultiplyAddEstimate(q3, x, c23);
            x = WideLoad.Load16(k3 + i);
            c30 = Vector512.MultiplyAddEstimate(q0, x, c30);
            c31 = Vector512.MultiplyAddEstimate(q1, x, c31);
            c32 = Vector512.MultiplyAddEstimate(q2, x, c32);
            c33 = Vector512.MultiplyAddEstimate(q3, x, c33);
        }

        // Sums v = 4 · key + row. Level 1, pairs (v, v + 1): [lower 8 + upper 8 of v | the same of v + 1].
        Vector512<float> p0 = HalvesSum(c00, c01);
        Vector512<float> p1 = HalvesSum(c02, c03);
        Vector512<float> p2 = HalvesSum(c10, c11);
        Vector512<float> p3 = HalvesSum(c12, c13);
        Vector512<float> p4 = HalvesSum(c20, c21);
        Vector512<float> p5 = HalvesSum(c22, c23);
        Vector512<float> p6 = HalvesSum(c30, c31);
        Vector512<float> p7 = HalvesSum(c32, c33);

        // Level 2, pairs of those: 128-bit lane t of zm holds z0..z3 (lower 4 + upper 4) of sum 4m + t, i.e. key m, row t.
        Vector512<float> z0 = QuartersSum(p0, p1);
        Vector512<float> z1 = QuartersSum(p2, p3);
        Vector512<float> z2 = QuartersSum(p4, p5);
        Vector512<float> z3 = QuartersSum(p6, p7);

        // Levels 3 and 4 within each 128-bit lane t (row t): (z0 + z1), (z2 + z3), then their sum, for keys 0..3 in order.
        Vector512<float> w0 = Avx512F.Shuffle(z0, z1, 0x88) + Avx512F.Shuffle(z0, z1, 0xDD);
        Vector512<float> w1 = Avx512F.Shuffle(z2, z3, 0x88) + Avx512F.Shuffle(z2, z3, 0xDD);
        Vector512<float> f = Avx512F.Shuffle(w0, w1, 0x88) + Avx512F.Shuffle(w0, w1, 0xDD);

        f.GetLower().GetLower().Store(s);
        f.GetLower().GetUpper().Store(s + Block);
        f.GetUpper().GetLower().Store(s + (2 * Block));
        f.GetUpper().GetUpper().Store(s + (3 * Block));
    }

    /// <summary>[x lanes 0..7 + x lanes 8..15 | the same of y].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> HalvesSum(Vector512<float> x, Vector512<float> y) =>
        Avx512F.Shuffle4x128(x, y, 0x44) + Avx512F.Shuffle4x128(x, y, 0xEE);

    /// <summary>x = [a | b] and y = [c | d] of 8 lanes each: [a0..3 + a4..7 | b.. | c.. | d..].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> QuartersSum(Vector512<float> x, Vector512<float> y) =>
        Avx512F.Shuffle4x128(x, y, 0x88) + Avx512F.Shuffle4x128(x, y, 0xDD);

    /// <summary>Widens <paramref name="keys"/> rows of <paramref name="heads"/> heads into rows of heads · dp floats, each head zero-padded to dp.</summary>
    private void WidenTile(T* source, long stride, int keys, int heads, float* destination, int tileWidth)
    {
        int d = _shape.HeadDim;
        int dp = tileWidth / heads;
        if (dp == d)
        {
            Widen.Rows(source, stride, keys, heads * d, destination, tileWidth, tileWidth);
            return;
        }

        for (int h = 0; h < heads; h++)
        {
            Widen.Rows(source + (h * d), stride, keys, d, destination + (h * dp), tileWidth, dp);
        }
    }
}
