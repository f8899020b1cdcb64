using ILGPU;
using ILGPU.Algorithms;

namespace LongCluster.Kernels.Gpu;

/// <summary>How a kernel reads one stored element as f32: storage stays in its dtype on the device and widens here.</summary>
internal interface IElementLoad<TElement>
    where TElement : unmanaged
{
    float Load(TElement value);
}

/// <summary>f32 storage: read as is.</summary>
internal readonly struct F32Load : IElementLoad<float>
{
    public float Load(float value) => value;
}

/// <summary>bf16 storage (the raw 16 bits): the top half of an f32, so widening is a shift.</summary>
internal readonly struct BF16Load : IElementLoad<ushort>
{
    public float Load(ushort value) => Interop.IntAsFloat((uint)value << 16);
}

/// <summary>
/// IEEE f16 storage (the raw 16 bits), widened by bit manipulation so that every kernel backend compiles it the same
/// way: normal numbers rebias the exponent (15 → 127), subnormals are mantissa · 2⁻²⁴ (exact in f32), and an
/// all-ones exponent keeps inf and NaN (payload shifted into place).
/// </summary>
internal readonly struct F16Load : IElementLoad<ushort>
{
    public float Load(ushort value)
    {
        uint sign = ((uint)value & 0x8000u) << 16;
        uint exponent = ((uint)value >> 10) & 0x1Fu;
        uint mantissa = (uint)value & 0x3FFu;
        if (exponent == 0)
        {
            float magnitude = mantissa * 5.9604644775390625e-8f;
            return sign != 0 ? -magnitude : magnitude;
        }

        uint bits = exponent == 0x1F
            ? sign | 0x7F800000u | (mantissa << 13)
            : sign | ((exponent + 112u) << 23) | (mantissa << 13);
        return Interop.IntAsFloat(bits);
    }
}

/// <summary>Scalars of one forward or decode launch (one struct: kernels take few parameters, and this keeps them in one place).</summary>
internal struct AttentionParams
{
    public int QueryTokens;
    public int KeyTokens;
    public int QueryHeads;
    public int KeyValueHeads;
    public int HeadDim;
    public int GroupSize;

    /// <summary>Forward: query rows per group. Decode: query rows (Tq · Hq) of the call.</summary>
    public int QueryTile;

    /// <summary>Forward: keys per shared-memory tile. Decode: keys per chunk.</summary>
    public int KeyTile;

    /// <summary>Forward: query tiles. Decode: key chunks.</summary>
    public int QueryTiles;

    /// <summary>Forward: key tiles (the row length of the tile table).</summary>
    public int KeyTiles;

    /// <summary>Softmax scale times log2(e): scores live in the log2 domain so that the softmax needs exp2 only.</summary>
    public float ScaleLog2;

    /// <summary><see cref="MaskKind"/> as an int.</summary>
    public int MaskKind;

    public long MaskSize;

    /// <summary>1 when the mask restricts queries to their own document.</summary>
    public int Document;
}

/// <summary>
/// The ILGPU kernels. Every loop over a tile is strided by the group size (<c>Group.DimX</c>), so one kernel serves
/// CUDA's 128-thread groups and the CPU accelerator's small ones; every reduction whose order changes a result
/// (softmax max and sum, dot products, the decode merge) runs in a fixed order by one thread, so the bits depend on
/// the data only, not on the group size.
/// </summary>
internal static class AttentionKernels
{
    /// <summary>Query rows per forward group.</summary>
    public const int QueryTile = 16;

    /// <summary>Keys per decode chunk: fixed, so the chunk partials and their merge order never change.</summary>
    public const int DecodeChunk = 256;

    /// <summary>Tile table entries (from <c>TileVisibility</c>, stored as bytes).</summary>
    public const byte Hidden = 0;
    public const byte Partial = 1;
    public const byte Visible = 2;

    private const float Ln2 = 0.693147180559945309f;

    /// <summary>
    /// Keys per forward tile for a head dimension: as many as keep Q, O (16 × d each), one K or V tile and the score
    /// tile within 48 KiB of shared memory, the amount every CUDA device gives a group without opting in.
    /// </summary>
    public static int KeyTileFor(int headDim) => headDim <= 64 ? 64 : headDim <= 128 ? 32 : 8;

    /// <summary>Shared floats of a forward group: Q, O, a K-or-V tile, scores, and three per-row statistics.</summary>
    public static int ForwardSharedFloats(int headDim, int keyTile) =>
        (2 * QueryTile * headDim) + (keyTile * headDim) + (QueryTile * keyTile) + (3 * QueryTile);

    /// <summary>Shared floats of a decode group: the query row, the chunk's scores and (max, sum).</summary>
    public static int DecodeSharedFloats(int headDim) => headDim + DecodeChunk + 2;

    /// <summary>
    /// Flash-attention forward. One group per (query tile of <see cref="QueryTile"/> rows, query head): Q is widened
    /// into shared memory once; then for every key tile the host's table does not mark hidden, the group loads the K
    /// tile (threads stride along d, so a warp reads contiguous bytes of a key row), computes the scores (one
    /// thread per (row, key), the mask tested per element only in Partial tiles), advances each row's online
    /// softmax (one thread per row), loads the V tile into the same buffer and adds P·V into the shared O (one thread
    /// per (row, dim)). Rows that see no key keep max = −∞ and sum = 0 and are written as O = 0, LSE = −∞.
    /// </summary>
    public static void Forward<TElement, TLoad>(
        AttentionParams p,
        ArrayView<TElement> query,
        ArrayView<TElement> key,
        ArrayView<TElement> value,
        ArrayView<long> queryPositions,
        ArrayView<long> keyPositions,
        ArrayView<int> queryDocuments,
        ArrayView<int> keyDocuments,
        ArrayView<byte> tiles,
        ArrayView<float> output,
        ArrayView<float> logSumExp)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        TLoad load = default;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int queryTile = Grid.IdxX % p.QueryTiles;
        int head = Grid.IdxX / p.QueryTiles;
        int kvHead = head / p.GroupSize;
        int d = p.HeadDim;
        int bq = QueryTile;
        int bk = p.KeyTile;
        int q0 = queryTile * bq;
        int rows = XMath.Min(bq, p.QueryTokens - q0);

        ArrayView<float> shared = SharedMemory.GetDynamic<float>();
        ArrayView<float> qs = shared.SubView(0, bq * d);
        ArrayView<float> os = shared.SubView(bq * d, bq * d);
        ArrayView<float> kvs = shared.SubView(2 * bq * d, bk * d);
        ArrayView<float> ss = shared.SubView((2 * bq * d) + (bk * d), bq * bk);
        ArrayView<float> stats = shared.SubView((2 * bq * d) + (bk * d) + (bq * bk), 3 * bq);

        for (int i = tid; i < bq * d; i += threads)
        {
            int r = i / d;
            int c = i - (r * d);
            qs[i] = r < rows ? load.Load(query[((((long)q0 + r) * p.QueryHeads) + head) * d + c]) : 0f;
            os[i] = 0f;
        }

        for (int r = tid; r < bq; r += threads)
        {
            stats[r] = float.NegativeInfinity;
            stats[bq + r] = 0f;
            stats[(2 * bq) + r] = 1f;
        }

        Group.Barrier();
        long kvStride = (long)p.KeyValueHeads * d;
        for (int kt = 0; kt < p.KeyTiles; kt++)
        {
            int visibility = tiles[((long)queryTile * p.KeyTiles) + kt];
            if (visibility == Hidden)
            {
                // The same table entry for every thread of the group, so the barriers below stay uniform.
                continue;
            }

            int k0 = kt * bk;
            int cols = XMath.Min(bk, p.KeyTokens - k0);
            for (int i = tid; i < bk * d; i += threads)
            {
                int j = i / d;
                int c = i - (j * d);
                kvs[i] = j < cols ? load.Load(key[(((long)k0 + j) * kvStride) + ((long)kvHead * d) + c]) : 0f;
            }

            Group.Barrier();
            for (int i = tid; i < bq * bk; i += threads)
            {
                int r = i / bk;
                int j = i - (r * bk);
                float s = float.NegativeInfinity;
                if (r < rows && j < cols
                    && (visibility == Visible || IsVisible(p, queryPositions[q0 + r], keyPositions[k0 + j], p.Document != 0 ? queryDocuments[q0 + r] : 0, p.Document != 0 ? keyDocuments[k0 + j] : 0)))
                {
                    float dot = 0f;
                    for (int c = 0; c < d; c++)
                    {
                        dot += qs[(r * d) + c] * kvs[(j * d) + c];
                    }

                    s = dot * p.ScaleLog2;
                }

                ss[i] = s;
            }

            Group.Barrier();

            // Online softmax, one thread per row; the V tile loads meanwhile (scores no longer need K).
            for (int r = tid; r < bq; r += threads)
            {
                float oldMax = stats[r];
                float newMax = oldMax;
                for (int j = 0; j < bk; j++)
                {
                    newMax = XMath.Max(newMax, ss[(r * bk) + j]);
                }

                float alpha = 1f;
                float sum = stats[bq + r];
                if (newMax == float.NegativeInfinity)
                {
                    for (int j = 0; j < bk; j++)
                    {
                        ss[(r * bk) + j] = 0f;
                    }
                }
                else
                {
                    alpha = oldMax == float.NegativeInfinity ? 0f : XMath.Exp2(oldMax - newMax);
                    float added = 0f;
                    for (int j = 0; j < bk; j++)
                    {
                        float s = ss[(r * bk) + j];
                        float e = s == float.NegativeInfinity ? 0f : XMath.Exp2(s - newMax);
                        ss[(r * bk) + j] = e;
                        added += e;
                    }

                    sum = (sum * alpha) + added;
                }

                stats[r] = newMax;
                stats[bq + r] = sum;
                stats[(2 * bq) + r] = alpha;
            }

            for (int i = tid; i < bk * d; i += threads)
            {
                int j = i / d;
                int c = i - (j * d);
                kvs[i] = j < cols ? load.Load(value[(((long)k0 + j) * kvStride) + ((long)kvHead * d) + c]) : 0f;
            }

            Group.Barrier();
            for (int i = tid; i < bq * d; i += threads)
            {
                int r = i / d;
                int c = i - (r * d);
                float acc = os[i] * stats[(2 * bq) + r];
                for (int j = 0; j < cols; j++)
                {
                    acc += ss[(r * bk) + j] * kvs[(j * d) + c];
                }

                os[i] = acc;
            }

            Group.Barrier();
        }

        for (int i = tid; i < rows * d; i += threads)
        {
            int r = i / d;
            int c = i - (r * d);
            float sum = stats[bq + r];
            output[((((long)q0 + r) * p.QueryHeads) + head) * d + c] = sum > 0f ? os[i] / sum : 0f;
        }

        for (int r = tid; r < rows; r += threads)
        {
            float sum = stats[bq + r];
            logSumExp[(((long)q0 + r) * p.QueryHeads) + head] = sum > 0f ? (stats[r] + XMath.Log2(sum)) * Ln2 : float.NegativeInfinity;
        }
    }

    /// <summary>
    /// Split-K decode, one group per (key chunk, query row of Tq · Hq): the query row is widened into shared memory;
    /// one thread per key computes a visible key's score (hidden keys are not read); one thread takes the chunk's max
    /// and sum in key order; threads over d add P·V (a warp reads contiguous bytes of each value row) and write the
    /// chunk's normalized partial (O, LSE), later merged in chunk order by <see cref="Merge"/>.
    /// </summary>
    public static void DecodePartial<TElement, TLoad>(
        AttentionParams p,
        ArrayView<TElement> query,
        ArrayView<TElement> key,
        ArrayView<TElement> value,
        ArrayView<long> queryPositions,
        ArrayView<long> keyPositions,
        ArrayView<int> queryDocuments,
        ArrayView<int> keyDocuments,
        ArrayView<float> partialOutput,
        ArrayView<float> partialLogSumExp)
        where TElement : unmanaged
        where TLoad : struct, IElementLoad<TElement>
    {
        TLoad load = default;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int rowCount = p.QueryTile;
        int row = Grid.IdxX % rowCount;
        int chunk = Grid.IdxX / rowCount;
        int t = row / p.QueryHeads;
        int head = row - (t * p.QueryHeads);
        int kvHead = head / p.GroupSize;
        int d = p.HeadDim;
        int chunkKeys = p.KeyTile;
        int k0 = chunk * chunkKeys;
        int cols = XMath.Min(chunkKeys, p.KeyTokens - k0);

        ArrayView<float> shared = SharedMemory.GetDynamic<float>();
        ArrayView<float> qs = shared.SubView(0, d);
        ArrayView<float> ss = shared.SubView(d, chunkKeys);
        ArrayView<float> stats = shared.SubView(d + chunkKeys, 2);
        for (int c = tid; c < d; c += threads)
        {
            qs[c] = load.Load(query[((long)row * d) + c]);
        }

        Group.Barrier();
        long kvStride = (long)p.KeyValueHeads * d;
        long queryPosition = queryPositions[t];
        int queryDocument = p.Document != 0 ? queryDocuments[t] : 0;
        for (int j = tid; j < chunkKeys; j += threads)
        {
            float s = float.NegativeInfinity;
            if (j < cols && IsVisible(p, queryPosition, keyPositions[k0 + j], queryDocument, p.Document != 0 ? keyDocuments[k0 + j] : 0))
            {
                long offset = (((long)k0 + j) * kvStride) + ((long)kvHead * d);
                float dot = 0f;
                for (int c = 0; c < d; c++)
                {
                    dot += qs[c] * load.Load(key[offset + c]);
                }

                s = dot * p.ScaleLog2;
            }

            ss[j] = s;
        }

        Group.Barrier();
        if (tid == 0)
        {
            float max = float.NegativeInfinity;
            for (int j = 0; j < cols; j++)
            {
                max = XMath.Max(max, ss[j]);
            }

            float sum = 0f;
            for (int j = 0; j < cols; j++)
            {
                float s = ss[j];
                float e = s == float.NegativeInfinity ? 0f : XMath.Exp2(s - max);
                ss[j] = e;
                sum += e;
            }

            stats[0] = max;
            stats[1] = sum;
        }

        Group.Barrier();
        float total = stats[1];
        long outRow = ((long)chunk * rowCount) + row;
        for (int c = tid; c < d; c += threads)
        {
            float acc = 0f;
            for (int j = 0; j < cols; j++)
            {
                float e = ss[j];
                if (e != 0f)
                {
                    // Zero weights include the hidden keys, which must not be read (their values may be anything).
                    acc += e * load.Load(value[(((long)k0 + j) * kvStride) + ((long)kvHead * d) + c]);
                }
            }

            partialOutput[(outRow * d) + c] = total > 0f ? acc / total : 0f;
        }

        if (tid == 0)
        {
            partialLogSumExp[outRow] = total > 0f ? (stats[0] + XMath.Log2(total)) * Ln2 : float.NegativeInfinity;
        }
    }

    /// <summary>
    /// Merges <paramref name="parts"/> partials <c>[parts, rows, d]</c> / <c>[parts, rows]</c> by LSE, in part order
    /// (left fold, as <c>Attention.MergePartials</c> applied part after part): one group per row, threads over d;
    /// each thread folds the row's LSEs itself (a handful of scalars), so no reduction crosses threads. A side with
    /// LSE = −∞ contributes nothing; both gives O = 0, LSE = −∞.
    /// </summary>
    public static void Merge(
        int rows, int headDim, int parts, ArrayView<float> partialOutput, ArrayView<float> partialLogSumExp, ArrayView<float> output, ArrayView<float> logSumExp)
    {
        int row = Grid.IdxX;
        int d = headDim;
        for (int c = Group.IdxX; c < d; c += Group.DimX)
        {
            float l = partialLogSumExp[row];
            float acc = partialOutput[((long)row * d) + c];
            for (int part = 1; part < parts; part++)
            {
                long other = ((long)part * rows) + row;
                float l2 = partialLogSumExp[other];
                float m = XMath.Max(l, l2);
                if (m == float.NegativeInfinity)
                {
                    acc = 0f;
                    l = float.NegativeInfinity;
                    continue;
                }

                float w1 = l == float.NegativeInfinity ? 0f : XMath.Exp(l - m);
                float w2 = l2 == float.NegativeInfinity ? 0f : XMath.Exp(l2 - m);
                float sum = w1 + w2;
                float o2 = partialOutput[(other * d) + c];
                acc = (w1 == 0f ? 0f : (w1 / sum) * acc) + (w2 == 0f ? 0f : (w2 / sum) * o2);
                l = m + XMath.Log(sum);
            }

            output[((long)row * d) + c] = acc;
            if (c == 0)
            {
                logSumExp[row] = l;
            }
        }
    }

    /// <summary>Benchmark data made on the device: a hash of the index and seed, uniform in [−1, 1), as f32.</summary>
    public static void FillF32(Index1D index, ArrayView<float> target, uint seed) => target[index] = Noise(index, seed);

    /// <summary>As <see cref="FillF32"/>, stored as bf16 bits (truncated: benchmark data needs no rounding).</summary>
    public static void FillBF16(Index1D index, ArrayView<ushort> target, uint seed) =>
        target[index] = (ushort)(Interop.FloatAsInt(Noise(index, seed)) >> 16);

    private static float Noise(int index, uint seed)
    {
        uint x = ((uint)index * 0x9E3779B9u) ^ seed;
        x ^= x >> 16;
        x *= 0x85EBCA6Bu;
        x ^= x >> 13;
        x *= 0xC2B2AE35u;
        x ^= x >> 16;
        return ((x >> 8) * (2f / 16777216f)) - 1f;
    }

    /// <summary><c>AttentionMask.IsVisible(q, k, qd, kd)</c> over the launch's mask fields.</summary>
    private static bool IsVisible(AttentionParams p, long q, long k, int queryDocument, int keyDocument)
    {
        if (p.Document != 0 && queryDocument != keyDocument)
        {
            return false;
        }

        return p.MaskKind switch
        {
            0 => true,
            1 => k <= q,
            2 => k <= q && k > q - p.MaskSize,
            _ => k < p.MaskSize || k <= q,
        };
    }
}
