using System.Numerics.Tensors;

namespace LongCluster.Kernels;

/// <summary>
/// The memory tier's retrieval rule (<see cref="RetrievalRule"/>, DESIGN.md "Memory tier: the retrieval rule") on one
/// node. <see cref="Forward{T}"/> applies it to a whole sequence; its pieces are callable on their own, for holders of
/// evicted blocks: <see cref="Representatives{T}"/> (once per block), <see cref="QuerySum{T}"/> (once per chunk),
/// <see cref="ScoreBlocks"/> (one dot per block and KV head), <see cref="SelectTop"/> (the tie rule) and
/// <see cref="AttendRanges{T}"/> (a KV head's query rows over chosen key ranges, a partial that merges by LSE with
/// <see cref="Attention.MergePartials"/>). Storage dtypes float, Half, BFloat16; compute f32; GQA as everywhere.
/// Every sum runs in a fixed order, so a rerun gives the same bits, whatever the thread count.
/// </summary>
public static class RetrievalAttention
{
    /// <summary>Key sums scored per tile by <see cref="ScoreBlocks"/>: well within a core's L2, so a tile's rows stay cached while every head reads them.</summary>
    private const int ScoreTileBytes = 256 * 1024;

    /// <summary>
    /// O <c>[T, Hq, d]</c> and LSE <c>[T, Hq]</c> of every row of a sequence of T tokens under the rule: Q, K and V are
    /// the same positions 0..T−1 (<c>shape.QueryTokens == shape.KeyTokens</c>), built by requests of
    /// <paramref name="requestRows"/> rows each, in order (empty: one request of all T rows). Each chunk attends with the
    /// forward kernel: causally over its prefix when no more than <c>topk</c> blocks are evicted (then the rule is
    /// causal), else over its local window, and per KV head over init and its selected blocks, merged by LSE. Extra
    /// memory: one f32 vector per block and KV head and a chunk's partial, never a T × T buffer or a copy of K/V.
    /// </summary>
    public static void Forward<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        RetrievalRule rule,
        ReadOnlySpan<int> requestRows,
        Span<float> output,
        Span<float> logSumExp,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        ValidateSequence(query, key, value, shape, rule, requestRows, output, logSumExp);
        SimdLevel level = (options ?? AttentionOptions.Default).ResolveSimd();
        int tokens = shape.QueryTokens;
        int hq = shape.QueryHeads;
        int hkv = shape.KeyValueHeads;
        int d = shape.HeadDim;
        int group = shape.GroupSize;
        int blocks = rule.BlockCount(tokens);
        long rowElements = (long)hkv * d;
        var blockKeySums = new float[blocks * rowElements];
        var blockPositions = new int[hkv * rule.Representatives];
        int represented = 0;
        int chunkRows = Math.Min(rule.Chunk, Math.Max(1, tokens));
        var far = new float[(long)chunkRows * group * d];
        var farLse = new float[chunkRows * group];
        var querySum = new float[rowElements];
        var chosen = new int[Math.Min(rule.TopK, Math.Max(1, blocks))];
        var ranges = new RowRange[chosen.Length + 1];

        int requestStart = 0;
        foreach (int rows in requestRows.IsEmpty ? [tokens] : requestRows)
        {
            for (int t0 = requestStart; t0 < requestStart + rows; t0 += rule.Chunk)
            {
                int t1 = Math.Min(t0 + rule.Chunk, requestStart + rows);
                int n = t1 - t0;
                ReadOnlySpan<T> chunkQuery = query.Slice(t0 * hq * d, n * hq * d);
                Span<float> chunkOutput = output.Slice(t0 * hq * d, n * hq * d);
                Span<float> chunkLse = logSumExp.Slice(t0 * hq, n * hq);
                long[] queryPositions = Positions(t0, n);
                int evicted = rule.EvictedBlocks(t0, blocks);
                if (evicted <= rule.TopK)
                {
                    // Every evicted block is selected: init ∪ blocks ∪ local is [0, t], the causal mask.
                    Attention.ForwardHeads(
                        chunkQuery, key[..(t1 * hkv * d)], value[..(t1 * hkv * d)], shape with { QueryTokens = n, KeyTokens = t1 }, AttentionMask.Causal,
                        new AttentionTokens(queryPositions, default), chunkOutput, chunkLse, options, 0, hkv);
                    continue;
                }

                for (; represented < evicted; represented++)
                {
                    int first = (int)rule.BlockStart(represented);
                    RepresentativesAt(
                        level,
                        query.Slice(first * hq * d, rule.Block * hq * d), key.Slice(first * hkv * d, rule.Block * hkv * d), shape with { QueryTokens = rule.Block, KeyTokens = rule.Block },
                        rule.Representatives, blockPositions, blockKeySums.AsSpan((int)(represented * rowElements), (int)rowElements));
                }

                // Local [n_init + J·B, t]: causal on global positions, every head at once, straight into the output.
                int localStart = (int)rule.BlockStart(evicted);
                Attention.ForwardHeads(
                    chunkQuery, key[(localStart * hkv * d)..(t1 * hkv * d)], value[(localStart * hkv * d)..(t1 * hkv * d)],
                    shape with { QueryTokens = n, KeyTokens = t1 - localStart }, AttentionMask.Causal,
                    new AttentionTokens(queryPositions, Positions(localStart, t1 - localStart)), chunkOutput, chunkLse, options, 0, hkv);

                // Init and the selected blocks, per KV head (each has its own choice): visible to every row of the chunk.
                QuerySum(chunkQuery, shape with { QueryTokens = n }, querySum);
                var scores = new float[hkv * evicted];
                ScoreBlocksAt(level, querySum, blockKeySums.AsSpan(0, (int)(evicted * rowElements)), hkv, d, scores);
                for (int g = 0; g < hkv; g++)
                {
                    int selected = SelectTop(scores.AsSpan(g * evicted, evicted), rule.TopK, chosen);
                    int rangeCount = KeyRanges(rule, chosen.AsSpan(0, selected), ranges);
                    Span<float> farOutput = far.AsSpan(0, n * group * d);
                    Span<float> farLogSumExp = farLse.AsSpan(0, n * group);
                    AttendRanges(chunkQuery, key[..(t1 * hkv * d)], value[..(t1 * hkv * d)], shape with { QueryTokens = n, KeyTokens = t1 }, g, ranges.AsSpan(0, rangeCount), farOutput, farLogSumExp, options);
                    for (int t = 0; t < n; t++)
                    {
                        int row = (t * hq) + (g * group);
                        Span<float> o = chunkOutput.Slice(row * d, group * d);
                        Span<float> l = chunkLse.Slice(row, group);
                        Attention.MergePartials(o, l, farOutput.Slice(t * group * d, group * d), farLogSumExp.Slice(t * group, group), o, l, d);
                    }
                }
            }

            requestStart += rows;
        }
    }

    /// <summary>
    /// The representatives of one block: for every KV head g, the <paramref name="count"/> rows m of the block with the
    /// largest <c>k[m, g] · q̄</c>, q̄ the block's queries summed over its rows and g's query heads (the mean up to a
    /// positive factor), ties to the lower row. Writes their rows within the block, ascending, to
    /// <paramref name="positions"/> <c>[Hkv, count]</c> and the sum of their keys to <paramref name="keySum"/>
    /// <c>[Hkv, d]</c>, which is all <see cref="ScoreBlocks"/> needs of the block.
    /// </summary>
    /// <param name="blockQuery">Q of the block's rows, <c>[B, Hq, d]</c>.</param>
    /// <param name="blockKey">K of the same rows, <c>[B, Hkv, d]</c>.</param>
    /// <param name="shape">The dimensions; QueryTokens and KeyTokens are both B.</param>
    public static void Representatives<T>(ReadOnlySpan<T> blockQuery, ReadOnlySpan<T> blockKey, AttentionShape shape, int count, Span<int> positions, Span<float> keySum)
        where T : unmanaged =>
        RepresentativesAt(Simd.Best, blockQuery, blockKey, shape, count, positions, keySum);

    private static void RepresentativesAt<T>(
        SimdLevel level, ReadOnlySpan<T> blockQuery, ReadOnlySpan<T> blockKey, AttentionShape shape, int count, Span<int> positions, Span<float> keySum)
        where T : unmanaged
    {
        CheckDtype<T>();
        shape.Validate();
        int b = shape.QueryTokens;
        int d = shape.HeadDim;
        int hkv = shape.KeyValueHeads;
        if (shape.KeyTokens != b || b < 1)
        {
            throw new ArgumentException($"a block's QueryTokens and KeyTokens are its rows, B >= 1: got {shape.QueryTokens} and {shape.KeyTokens}", nameof(shape));
        }

        if (count < 1 || count > b)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"representatives must be in 1..B ({b})");
        }

        CheckElements(blockQuery.Length, shape.QueryElements, nameof(blockQuery), "[B, Hq, d]");
        CheckElements(blockKey.Length, shape.KeyValueElements, nameof(blockKey), "[B, Hkv, d]");
        CheckElements(positions.Length, (long)hkv * count, nameof(positions), "[Hkv, count]");
        CheckElements(keySum.Length, (long)hkv * d, nameof(keySum), "[Hkv, d]");

        var mean = new float[hkv * d];
        QuerySum(blockQuery, shape, mean);
        RepresentativesOfSum(level, mean, blockKey, shape, count, positions, keySum);
    }

    /// <summary>
    /// <see cref="Representatives{T}"/> of a block whose query sum <paramref name="querySum"/> <c>[Hkv, d]</c> is already
    /// known (accumulated row by row with <see cref="AddQuerySum{T}"/> as the block's rows arrive, in order, which gives
    /// the same bits as <see cref="QuerySum{T}"/> over the whole block): a holder that no longer has the block's Q.
    /// </summary>
    /// <param name="blockKey">K of the block's rows, <c>[B, Hkv, d]</c>.</param>
    /// <param name="shape">The dimensions; QueryTokens and KeyTokens are both B.</param>
    public static void RepresentativesOfSum<T>(ReadOnlySpan<float> querySum, ReadOnlySpan<T> blockKey, AttentionShape shape, int count, Span<int> positions, Span<float> keySum)
        where T : unmanaged
    {
        CheckDtype<T>();
        shape.Validate();
        if (shape.KeyTokens != shape.QueryTokens || shape.KeyTokens < 1)
        {
            throw new ArgumentException($"a block's QueryTokens and KeyTokens are its rows, B >= 1: got {shape.QueryTokens} and {shape.KeyTokens}", nameof(shape));
        }

        if (count < 1 || count > shape.KeyTokens)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"representatives must be in 1..B ({shape.KeyTokens})");
        }

        CheckElements(querySum.Length, (long)shape.KeyValueHeads * shape.HeadDim, nameof(querySum), "[Hkv, d]");
        CheckElements(blockKey.Length, shape.KeyValueElements, nameof(blockKey), "[B, Hkv, d]");
        CheckElements(positions.Length, (long)shape.KeyValueHeads * count, nameof(positions), "[Hkv, count]");
        CheckElements(keySum.Length, (long)shape.KeyValueHeads * shape.HeadDim, nameof(keySum), "[Hkv, d]");
        RepresentativesOfSum(Simd.Best, querySum, blockKey, shape, count, positions, keySum);
    }

    private static void RepresentativesOfSum<T>(
        SimdLevel level, ReadOnlySpan<float> mean, ReadOnlySpan<T> blockKey, AttentionShape shape, int count, Span<int> positions, Span<float> keySum)
        where T : unmanaged
    {
        int b = shape.QueryTokens;
        int d = shape.HeadDim;
        int hkv = shape.KeyValueHeads;
        var keys = new float[b * d];
        var scores = new float[b];
        for (int g = 0; g < hkv; g++)
        {
            unsafe
            {
                fixed (T* k = blockKey)
                fixed (float* rows = keys, q = mean, s = scores)
                {
                    Widen.Rows(k + (g * d), hkv * d, b, d, rows, d, d);
                    VectorMath.Dots(level, rows, d, b, q + (g * d), d, s, 1);
                }
            }

            Span<int> chosen = positions.Slice(g * count, count);
            SelectTop(scores, count, chosen);
            Span<float> sum = keySum.Slice(g * d, d);
            sum.Clear();
            foreach (int m in chosen)
            {
                TensorPrimitives.Add(sum, keys.AsSpan(m * d, d), sum);
            }
        }
    }

    /// <summary>
    /// <c>sum[g] = Σ_t Σ_{h of g} q[t, h]</c> for every KV head g, rows in order then heads in order: a chunk's side of the
    /// bilinear relevance. <paramref name="query"/> is <c>[shape.QueryTokens, Hq, d]</c>, <paramref name="sum"/> <c>[Hkv, d]</c>.
    /// </summary>
    public static void QuerySum<T>(ReadOnlySpan<T> query, AttentionShape shape, Span<float> sum)
        where T : unmanaged
    {
        sum.Clear();
        AddQuerySum(query, shape, sum);
    }

    /// <summary>
    /// <see cref="QuerySum{T}"/> added to what <paramref name="sum"/> holds: a block's sum accumulated as its rows arrive
    /// in several pieces, in the same order (and so to the same bits) as one call over all of them.
    /// </summary>
    public static void AddQuerySum<T>(ReadOnlySpan<T> query, AttentionShape shape, Span<float> sum)
        where T : unmanaged
    {
        CheckDtype<T>();
        shape.Validate();
        int d = shape.HeadDim;
        CheckElements(query.Length, shape.QueryElements, nameof(query), "[Tq, Hq, d]");
        CheckElements(sum.Length, (long)shape.KeyValueHeads * d, nameof(sum), "[Hkv, d]");
        Span<float> row = stackalloc float[d];
        for (int t = 0; t < shape.QueryTokens; t++)
        {
            for (int h = 0; h < shape.QueryHeads; h++)
            {
                Widen.ToSingle(query.Slice(((t * shape.QueryHeads) + h) * d, d), row);
                Span<float> target = sum.Slice(h / shape.GroupSize * d, d);
                TensorPrimitives.Add(target, row, target);
            }
        }
    }

    /// <summary>
    /// Relevance of every block for a chunk, per KV head: <c>scores[g, j] = querySum[g] · blockKeySums[j, g]</c>, where
    /// <paramref name="querySum"/> <c>[Hkv, d]</c> comes from <see cref="QuerySum{T}"/> and
    /// <paramref name="blockKeySums"/> <c>[blocks, Hkv, d]</c> from <see cref="Representatives{T}"/>;
    /// <paramref name="scores"/> is <c>[Hkv, blocks]</c>.
    /// </summary>
    public static void ScoreBlocks(ReadOnlySpan<float> querySum, ReadOnlySpan<float> blockKeySums, int keyValueHeads, int headDim, Span<float> scores) =>
        ScoreBlocksAt(Simd.Best, querySum, blockKeySums, keyValueHeads, headDim, scores);

    private static void ScoreBlocksAt(SimdLevel level, ReadOnlySpan<float> querySum, ReadOnlySpan<float> blockKeySums, int keyValueHeads, int headDim, Span<float> scores)
    {
        if (keyValueHeads < 1 || headDim < 1)
        {
            throw new ArgumentException($"keyValueHeads and headDim must be >= 1, got {keyValueHeads} and {headDim}");
        }

        long row = (long)keyValueHeads * headDim;
        CheckElements(querySum.Length, row, nameof(querySum), "[Hkv, d]");
        if (blockKeySums.Length % row != 0)
        {
            throw new ArgumentException($"blockKeySums has {blockKeySums.Length} elements, not a multiple of Hkv · d = {row} ([blocks, Hkv, d])", nameof(blockKeySums));
        }

        int blocks = (int)(blockKeySums.Length / row);
        CheckElements(scores.Length, (long)keyValueHeads * blocks, nameof(scores), "[Hkv, blocks]");
        if (blocks == 0)
        {
            return;
        }

        // Tile by tile, every head within a tile: one streaming pass over the key sums (a head at a time over all of them
        // reads each block's row once per head, a page apart, at a million tokens tens of MiB per head). A tile starts at
        // a multiple of 4 blocks, where Dots starts its groups of 4, so every score has the bits of one call over all.
        int tile = Math.Max(4, ScoreTileBytes / (int)(row * sizeof(float)) / 4 * 4);
        unsafe
        {
            fixed (float* q = querySum, k = blockKeySums, s = scores)
            {
                for (int first = 0; first < blocks; first += tile)
                {
                    int count = Math.Min(tile, blocks - first);
                    for (int g = 0; g < keyValueHeads; g++)
                    {
                        VectorMath.Dots(level, k + (first * row) + (g * headDim), (int)row, count, q + (g * headDim), headDim, s + ((long)g * blocks) + first, 1);
                    }
                }
            }
        }
    }

    /// <summary>
    /// The indices of the <paramref name="count"/> largest scores (all of them when there are fewer), ties to the lower
    /// index, NaN below everything; written ascending to <paramref name="chosen"/>, whose used length is returned.
    /// To choose among candidates gathered from several holders, list them in ascending block order first.
    /// </summary>
    public static int SelectTop(ReadOnlySpan<float> scores, int count, Span<int> chosen)
    {
        if (count < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 1");
        }

        int n = Math.Min(count, scores.Length);
        if (chosen.Length < n)
        {
            throw new ArgumentException($"chosen has room for {chosen.Length} indices, {n} are chosen", nameof(chosen));
        }

        // The best so far, best first; a later index enters only with a strictly larger score, so ties keep the lower.
        Span<int> best = chosen[..n];
        int size = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            float score = Score(scores, i);
            if (size == n && score <= Score(scores, best[n - 1]))
            {
                continue;
            }

            int at = Math.Min(size, n - 1);
            while (at > 0 && score > Score(scores, best[at - 1]))
            {
                best[at] = best[at - 1];
                at--;
            }

            best[at] = i;
            size = Math.Min(size + 1, n);
        }

        best.Sort();
        return n;

        static float Score(ReadOnlySpan<float> scores, int i) => float.IsNaN(scores[i]) ? float.NegativeInfinity : scores[i];
    }

    /// <summary>
    /// Attention of the query rows of KV head <paramref name="kvHead"/> over the keys of <paramref name="ranges"/> (rows
    /// of K and V, ascending and disjoint), every key visible to every row: the partial of the chosen blocks (and init)
    /// of one KV head. Runs the forward kernel on a view of each range and merges the partials by LSE in range order.
    /// Rows with no keys get O = 0 and LSE = −∞.
    /// </summary>
    /// <param name="query">Q <c>[Tq, Hq, d]</c> (every head; only those of <paramref name="kvHead"/> are read).</param>
    /// <param name="key">K <c>[Tk, Hkv, d]</c>.</param>
    /// <param name="value">V <c>[Tk, Hkv, d]</c>.</param>
    /// <param name="output">O <c>[Tq, G, d]</c> of the G query heads of <paramref name="kvHead"/>, written.</param>
    /// <param name="logSumExp">LSE <c>[Tq, G]</c>, written.</param>
    public static void AttendRanges<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        int kvHead,
        ReadOnlySpan<RowRange> ranges,
        Span<float> output,
        Span<float> logSumExp,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        CheckDtype<T>();
        shape.Validate();
        int group = shape.GroupSize;
        int d = shape.HeadDim;
        CheckElements(query.Length, shape.QueryElements, nameof(query), "[Tq, Hq, d]");
        CheckElements(key.Length, shape.KeyValueElements, nameof(key), "[Tk, Hkv, d]");
        CheckElements(value.Length, shape.KeyValueElements, nameof(value), "[Tk, Hkv, d]");
        CheckElements(output.Length, (long)shape.QueryTokens * group * d, nameof(output), "[Tq, G, d]");
        CheckElements(logSumExp.Length, (long)shape.QueryTokens * group, nameof(logSumExp), "[Tq, G]");
        if (kvHead < 0 || kvHead >= shape.KeyValueHeads)
        {
            throw new ArgumentOutOfRangeException(nameof(kvHead), kvHead, $"kvHead must be in 0..{shape.KeyValueHeads - 1}");
        }

        int end = 0;
        foreach (RowRange range in ranges)
        {
            if (range.Start < end || range.Length < 1 || range.End > shape.KeyTokens)
            {
                throw new ArgumentException(
                    $"range [{range.Start}, {range.End}) must be non-empty, within the {shape.KeyTokens} key rows and after the previous range (which ends at {end})", nameof(ranges));
            }

            end = range.End;
        }

        output.Clear();
        logSumExp.Fill(float.NegativeInfinity);
        float[] partial = ranges.Length > 1 ? new float[output.Length] : [];
        float[] partialLse = ranges.Length > 1 ? new float[logSumExp.Length] : [];
        int kvRow = shape.KeyValueHeads * d;
        for (int i = 0; i < ranges.Length; i++)
        {
            RowRange range = ranges[i];
            Span<float> o = i == 0 ? output : partial;
            Span<float> l = i == 0 ? logSumExp : partialLse;
            Attention.ForwardHeads(
                query, key.Slice(range.Start * kvRow, range.Length * kvRow), value.Slice(range.Start * kvRow, range.Length * kvRow),
                shape with { KeyTokens = range.Length }, AttentionMask.Full, default, o, l, options, kvHead, 1);
            if (i > 0)
            {
                Attention.MergePartials(output, logSumExp, o, l, output, logSumExp, d);
            }
        }
    }

    /// <summary>The checks of <see cref="Forward{T}"/> (and of <see cref="RetrievalReference.Forward{T}"/>, so both refuse alike).</summary>
    internal static void ValidateSequence<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, RetrievalRule rule, ReadOnlySpan<int> requestRows, Span<float> output, Span<float> logSumExp)
        where T : unmanaged
    {
        Attention.ValidateCall(query, key, value, shape, output, logSumExp);
        if (shape.QueryTokens != shape.KeyTokens)
        {
            throw new ArgumentException(
                $"the retrieval rule runs over a whole sequence: Q and K must be the same tokens 0..T-1, got QueryTokens={shape.QueryTokens}, KeyTokens={shape.KeyTokens}", nameof(shape));
        }

        rule.Validate();
        long total = 0;
        foreach (int rows in requestRows)
        {
            if (rows < 1)
            {
                throw new ArgumentException($"every request has >= 1 row, got [{string.Join(", ", requestRows.ToArray())}]", nameof(requestRows));
            }

            total += rows;
        }

        if (!requestRows.IsEmpty && total != shape.QueryTokens)
        {
            throw new ArgumentException($"requests of [{string.Join(", ", requestRows.ToArray())}] rows add up to {total}, not the sequence's {shape.QueryTokens} tokens", nameof(requestRows));
        }
    }

    /// <summary>Init and the chosen blocks (ascending) as ranges of key rows, neighbours joined so that each is one forward call.</summary>
    private static int KeyRanges(RetrievalRule rule, ReadOnlySpan<int> blocks, Span<RowRange> ranges)
    {
        int count = 0;
        if (rule.Init > 0)
        {
            ranges[count++] = new RowRange(0, rule.Init);
        }

        foreach (int block in blocks)
        {
            int start = (int)rule.BlockStart(block);
            if (count > 0 && ranges[count - 1].End == start)
            {
                ranges[count - 1] = ranges[count - 1] with { Length = ranges[count - 1].Length + rule.Block };
            }
            else
            {
                ranges[count++] = new RowRange(start, rule.Block);
            }
        }

        return count;
    }

    private static long[] Positions(long start, int count)
    {
        var positions = new long[count];
        for (int i = 0; i < count; i++)
        {
            positions[i] = start + i;
        }

        return positions;
    }

    private static void CheckDtype<T>()
        where T : unmanaged
    {
        if (!Widen.IsSupported<T>())
        {
            throw new NotSupportedException($"storage dtype {typeof(T).Name} is not supported (float, Half, BFloat16)");
        }
    }

    private static void CheckElements(int actual, long expected, string name, string layout)
    {
        if (actual != expected)
        {
            throw new ArgumentException($"{name} has {actual} elements, expected {layout} = {expected}", name);
        }
    }
}
