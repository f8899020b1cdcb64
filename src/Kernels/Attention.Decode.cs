using System.Buffers;

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
        ResolvedTokens resolved = tokens.Resolve(shape, mask);
        if (shape.QueryTokens == 0)
        {
            return;
        }

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
                    var job = new DecodeJob<T>(q, k, v, po, plse, shape, mask, resolved, scale * Log2E, options.ResolveSimd());
                    WorkQueue.Run(chunks * shape.KeyValueHeads, threads, job.RunItem);
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
/// One decode call: work items are (key chunk, KV head), each writing its partial (O, LSE) for all query rows of the
/// head group. Per tile of keys: scores by one dot product per (key, row) with the key row read once for all rows,
/// the online-softmax step, then O += P·V on the micro-kernel straight from V's rows (f32) or from the tile
/// widened once (f16, bf16) — no transposed copy of K, which a handful of rows would not amortize.
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

    public DecodeJob(T* q, T* k, T* v, float* partialO, float* partialLse, AttentionShape shape, AttentionMask mask, ResolvedTokens tokens, float scaleLog2, SimdLevel level)
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
    }

    public void RunItem(int item)
    {
        int chunk = item / _shape.KeyValueHeads;
        int kvHead = item % _shape.KeyValueHeads;
        int d = _shape.HeadDim;
        int dp = Attention.RoundUp(d, 8);
        int tq = _shape.QueryTokens;
        int group = _shape.GroupSize;
        int rows = group * tq;
        ForwardScratch scratch = ForwardScratch.For(rows, dp);
        float* qs = scratch.Queries;
        float* acc = scratch.Accumulator;
        float* s = scratch.Scores;
        float* m = scratch.RowMax;
        float* l = scratch.RowSum;
        long[] rowPositions = scratch.RowPositions;
        int[] rowDocuments = scratch.RowDocuments;

        for (int g = 0; g < group; g++)
        {
            int head = (kvHead * group) + g;
            for (int i = 0; i < tq; i++)
            {
                int r = (g * tq) + i;
                Widen.ToSingleScaled(
                    new ReadOnlySpan<T>(_q + (((long)i * _shape.QueryHeads) + head) * d, d), _scaleLog2, new Span<float>(qs + ((long)r * dp), d));
                rowPositions[r] = _tokens.QueryPositions[i];
                rowDocuments[r] = _tokens.HasDocuments ? _tokens.QueryDocuments[i] : 0;
            }
        }

        new Span<float>(acc, rows * dp).Clear();
        new Span<float>(l, rows).Clear();
        new Span<float>(m, rows).Fill(float.NegativeInfinity);

        int chunkStart = chunk * Attention.DecodeChunk;
        int chunkEnd = Math.Min(_shape.KeyTokens, chunkStart + Attention.DecodeChunk);
        int kvStride = _shape.KeyValueHeads * d;

        // f32 rows are read in place; V only when its rows need no padding to the micro-kernel's 8 columns.
        bool keysInPlace = typeof(T) == typeof(float);
        bool valuesInPlace = keysInPlace && dp == d;
        for (int k0 = chunkStart; k0 < chunkEnd; k0 += Block)
        {
            int keys = Math.Min(Block, chunkEnd - k0);
            TileVisibility visibility = _mask.Classify(_queryRange, _tokens.KeyRange(k0, keys));
            if (visibility == TileVisibility.Hidden)
            {
                continue;
            }

            long tileOffset = ((long)k0 * kvStride) + (kvHead * d);
            float* keyRows = scratch.KeysTransposed;
            int keyStride = dp;
            if (keysInPlace)
            {
                keyRows = (float*)(_k + tileOffset);
                keyStride = kvStride;
            }
            else
            {
                Widen.Rows(_k + tileOffset, kvStride, keys, d, keyRows, dp);
            }

            for (int j = 0; j < keys; j++)
            {
                float* keyRow = keyRows + ((long)j * keyStride);
                for (int r = 0; r < rows; r++)
                {
                    s[(r * Block) + j] = VectorMath.Dot(_level, qs + ((long)r * dp), keyRow, d);
                }
            }

            if (visibility == TileVisibility.Partial)
            {
                ScoreMask.Apply(_mask, _tokens, s, Block, rows, k0, keys, rowPositions, rowDocuments);
            }

            int paddedKeys = Attention.RoundUp(keys, 8);
            for (int r = 0; r < rows; r++)
            {
                new Span<float>(s + (r * Block) + keys, paddedKeys - keys).Fill(float.NegativeInfinity);
            }

            OnlineSoftmax.Update(_level, s, Block, rows, paddedKeys, m, l, acc, dp, dp);
            float* valueRows = scratch.Values;
            int valueStride = dp;
            if (valuesInPlace)
            {
                valueRows = (float*)(_v + tileOffset);
                valueStride = kvStride;
            }
            else
            {
                Widen.Rows(_v + tileOffset, kvStride, keys, d, valueRows, dp);
            }

            MicroGemm.Run(_level, s, Block, valueRows, valueStride, acc, dp, rows, dp, keys, accumulate: true);
        }

        long partialRows = _shape.LseElements;
        for (int g = 0; g < group; g++)
        {
            int head = (kvHead * group) + g;
            for (int i = 0; i < tq; i++)
            {
                int r = (g * tq) + i;
                long rowIndex = (chunk * partialRows) + ((long)i * _shape.QueryHeads) + head;
                OnlineSoftmax.Finish(acc + ((long)r * dp), m[r], l[r], _partialO + (rowIndex * d), d, _partialLse + rowIndex);
            }
        }
    }
}
