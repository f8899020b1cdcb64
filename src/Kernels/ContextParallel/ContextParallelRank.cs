using System.Buffers;
using System.Diagnostics;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>The rows one rank contributes to a chunk: its tokens in token order, all heads.</summary>
/// <param name="Query">Q <c>[n, Hq, d]</c>.</param>
/// <param name="Key">K <c>[n, Hkv, d]</c>.</param>
/// <param name="Value">V <c>[n, Hkv, d]</c>.</param>
/// <param name="Positions">Global position of each row, <c>[n]</c>.</param>
/// <param name="Documents">Document id of each row, <c>[n]</c>, or empty when the mask has no documents.</param>
public sealed record RankInput<T>(T[] Query, T[] Key, T[] Value, long[] Positions, int[] Documents)
    where T : unmanaged;

/// <summary>
/// A rank's exact result for its input rows: O <c>[n, Hq, d]</c> and LSE <c>[n, Hq]</c> in the first elements of
/// pooled arrays (which may be longer), and where its time went. <see cref="Release"/> returns the arrays to the
/// pool once they have been read; fresh memory costs page faults that pooling avoids.
/// </summary>
public sealed record RankOutput(float[] Output, float[] LogSumExp, RankTimings Timings)
{
    public void Release()
    {
        ArrayPool<float>.Shared.Return(Output);
        ArrayPool<float>.Shared.Return(LogSumExp);
    }
}

/// <summary>
/// Wall time of one rank for one chunk: the scatter all-to-all, kernel compute (and merges) in the ring, time
/// spent waiting for the next block after computing, and the gather all-to-all.
/// </summary>
public sealed record RankTimings(TimeSpan Scatter, TimeSpan Compute, TimeSpan Waiting, TimeSpan Gather)
{
    public TimeSpan Total => Scatter + Compute + Waiting + Gather;
}

/// <summary>
/// One rank of a context-parallel sequence. It keeps its KV for every chunk so far (sequence-sharded for ring
/// layouts, head-sharded for Ulysses and hybrid) and, for each new chunk: scatters Q/K/V to its Ulysses group
/// (all-to-all), appends the new K/V, runs the ring — at each step the block it holds is already on its way to
/// the next rank while it computes on it — merging the per-step partials by LSE in step order, and gathers O back
/// (all-to-all). A block that none of its queries can see costs no compute.
/// </summary>
public sealed class ContextParallelRank<T>
    where T : unmanaged
{
    private readonly List<(long[] Positions, int[] Documents, T[] Key, T[] Value)> _segments = [];
    private readonly int _headDim;

    public ContextParallelRank(int rank, int headDim)
    {
        Rank = rank;
        _headDim = headDim;
    }

    public int Rank { get; }

    /// <summary>Rows of KV this rank holds (all chunks).</summary>
    public long StoredRows => _segments.Sum(s => (long)s.Positions.Length);

    /// <summary>Bytes of K, V, positions and document ids this rank holds.</summary>
    public long StoredBytes => _segments.Sum(s =>
        ((long)(s.Key.Length + s.Value.Length) * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()) + (s.Positions.Length * 8L) + (s.Documents.Length * 4L));

    /// <summary>KV segments held (one per chunk or appended decode row); <see cref="Truncate"/> rolls back to a count.</summary>
    public int SegmentCount => _segments.Count;

    /// <summary>Drops the segments added after the first <paramref name="segments"/> (a chunk that failed part-way).</summary>
    public void Truncate(int segments)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segments);
        if (segments < _segments.Count)
        {
            _segments.RemoveRange(segments, _segments.Count - segments);
        }
    }

    /// <summary>
    /// Appends KV rows this rank owns without a ring pass (a decoded token): K and V <c>[n, kvHeads, d]</c> for
    /// this rank's KV heads.
    /// </summary>
    public void Append(long[] positions, int[] documents, T[] key, T[] value)
    {
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(documents);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        _segments.Add((positions, documents, key, value));
    }

    /// <summary>
    /// A partial result of queries <c>[n, qHeads, d]</c> at <paramref name="positions"/> over every KV row this rank
    /// holds: segments merged by LSE in the order they were stored. Returns false, with O = 0 and LSE = −∞, when the
    /// mask hides every stored key.
    /// </summary>
    public bool AttendStored(
        ReadOnlySpan<T> query, long[] positions, int[] documents, int queryHeads, int keyValueHeads, AttentionMask mask, AttentionOptions options, Span<float> output, Span<float> logSumExp)
    {
        ArgumentNullException.ThrowIfNull(positions);
        var shape = new AttentionShape(positions.Length, 0, queryHeads, keyValueHeads, _headDim);
        float[] partO = ArrayPool<float>.Shared.Rent((int)shape.QueryElements);
        float[] partL = ArrayPool<float>.Shared.Rent((int)shape.LseElements);
        try
        {
            bool computed = false;
            TileRange queries = TileRange.Of(positions, mask.Document ? documents : default);
            Span<float> po = partO.AsSpan(0, output.Length);
            Span<float> pl = partL.AsSpan(0, logSumExp.Length);
            foreach ((long[] keyPositions, int[] keyDocuments, T[] key, T[] value) in _segments)
            {
                computed |= AttendBlock(query, positions, documents, queries, keyPositions, keyDocuments, key, value, shape, mask, options, computed, output, logSumExp, po, pl);
            }

            if (!computed)
            {
                output.Clear();
                logSumExp.Fill(float.NegativeInfinity);
            }

            return computed;
        }
        finally
        {
            ArrayPool<float>.Shared.Return(partO);
            ArrayPool<float>.Shared.Return(partL);
        }
    }

    /// <summary>How long a rank waits for any one frame from a peer before the chunk fails (a lost peer must not hang the run).</summary>
    public TimeSpan ReceiveTimeout { get; init; } = TimeSpan.FromMinutes(5);

    public async Task<RankOutput> PrefillChunkAsync(
        IExchange exchange, LayoutPlan plan, RankInput<T> input, AttentionMask mask, AttentionOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(exchange);
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(input);
        string step = "scatter all-to-all";
        long started = Stopwatch.GetTimestamp();
        TimeSpan compute = TimeSpan.Zero;
        TimeSpan waiting = TimeSpan.Zero;
        try
        {
            int member = plan.MemberOf(Rank);
            int ring = plan.RingOf(Rank);
            int d = _headDim;
            (_, int qHeads) = plan.QueryHeadsOf(member);
            (_, int kvHeads) = plan.KeyValueHeadsOf(member);

            // 1. Scatter: every member of the Ulysses group gets all the group's tokens for its own heads.
            (long[] positions, int[] documents, T[] query, T[] key, T[] value, int[] memberRows) =
                await ScatterAsync(exchange, plan, input, cancellationToken).ConfigureAwait(false);
            _segments.Add((positions, documents, key, value));
            TimeSpan scatter = Stopwatch.GetElapsedTime(started);

            // 2. Ring over the ranks that hold the same heads: exact partials merged by LSE in step order.
            int rows = positions.Length;
            var shape = new AttentionShape(rows, 0, qHeads, kvHeads, d);
            // Pooled: every element used is written before it is read (the first live block goes straight into acc).
            float[] accO = ArrayPool<float>.Shared.Rent((int)shape.QueryElements);
            float[] accL = ArrayPool<float>.Shared.Rent((int)shape.LseElements);
            float[] partO = ArrayPool<float>.Shared.Rent((int)shape.QueryElements);
            float[] partL = ArrayPool<float>.Shared.Rent((int)shape.LseElements);
            bool computed = false;
            TileRange queries = TileRange.Of(positions, mask.Document ? documents : default);
            int ringSize = plan.RingDegree;
            int next = plan.RankAt((ring + 1) % ringSize, member);
            int previous = plan.RankAt((ring - 1 + ringSize) % ringSize, member);
            Frame current = StoreFrame();
            try
            {
                for (int s = 0; s < ringSize; s++)
                {
                    step = $"ring step {s + 1} of {ringSize}";
                    ValueTask<Frame> incoming = default;
                    if (s < ringSize - 1)
                    {
                        // Double buffering: the block goes out and the next one is awaited before this one is computed.
                        await exchange.SendAsync(next, current, cancellationToken).ConfigureAwait(false);
                        incoming = ReceiveAsync(exchange, previous, cancellationToken);
                    }

                    long computing = Stopwatch.GetTimestamp();
                    computed |= AttendBlock(
                        query, positions, documents, queries, current.Section<long>(0), current.Section<int>(1), current.Section<T>(2), current.Section<T>(3), shape, mask, options, computed,
                        accO.AsSpan(0, (int)shape.QueryElements), accL.AsSpan(0, (int)shape.LseElements), partO.AsSpan(0, (int)shape.QueryElements), partL.AsSpan(0, (int)shape.LseElements));
                    compute += Stopwatch.GetElapsedTime(computing);
                    if (s < ringSize - 1)
                    {
                        long waited = Stopwatch.GetTimestamp();
                        Frame received = await incoming.ConfigureAwait(false);
                        waiting += Stopwatch.GetElapsedTime(waited);
                        current.Dispose();
                        current = received;
                    }
                }
            }
            finally
            {
                current.Dispose();
                ArrayPool<float>.Shared.Return(partO);
                ArrayPool<float>.Shared.Return(partL);
            }

            if (!computed)
            {
                // No key visible to any of this rank's queries: O = 0, LSE = −∞.
                accO.AsSpan(0, (int)shape.QueryElements).Clear();
                accL.AsSpan(0, (int)shape.LseElements).Fill(float.NegativeInfinity);
            }

            // 3. Gather: O rows go back to the members that own the tokens.
            step = "gather all-to-all";
            long gathering = Stopwatch.GetTimestamp();
            (float[] output, float[] lse) = await GatherAsync(exchange, plan, input.Positions.Length, memberRows, accO, accL, cancellationToken).ConfigureAwait(false);
            return new RankOutput(output, lse, new RankTimings(scatter, compute, waiting, Stopwatch.GetElapsedTime(gathering)));
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw new ContextParallelException(Rank, step, e);
        }
    }

    /// <summary>
    /// Attends the queries to one KV block: into (<paramref name="output"/>, <paramref name="logSumExp"/>) directly for
    /// the first visible block, otherwise into the partial buffers and merged by LSE. Returns false (and computes
    /// nothing) when the mask hides the block entirely.
    /// </summary>
    private static bool AttendBlock(
        ReadOnlySpan<T> query, long[] positions, int[] documents, TileRange queries,
        ReadOnlySpan<long> keyPositions, ReadOnlySpan<int> keyDocuments, ReadOnlySpan<T> key, ReadOnlySpan<T> value,
        AttentionShape shape, AttentionMask mask, AttentionOptions options, bool accumulate,
        Span<float> output, Span<float> logSumExp, Span<float> partOutput, Span<float> partLogSumExp)
    {
        if (keyPositions.IsEmpty || positions.Length == 0
            || mask.Classify(queries, TileRange.Of(keyPositions, mask.Document ? keyDocuments : default)) == TileVisibility.Hidden)
        {
            return false;
        }

        var tokens = new AttentionTokens(positions, keyPositions, mask.Document ? documents : default, mask.Document ? keyDocuments : default);
        Attention.Forward<T>(
            query, key, value, shape with { KeyTokens = keyPositions.Length }, mask, tokens, accumulate ? partOutput : output, accumulate ? partLogSumExp : logSumExp, options);
        if (accumulate)
        {
            Attention.MergePartials(output, logSumExp, partOutput, partLogSumExp, output, logSumExp, shape.HeadDim);
        }

        return true;
    }

    /// <summary>All of this rank's stored KV as one frame: positions, documents, K, V.</summary>
    private Frame StoreFrame()
    {
        if (_segments.Count == 1)
        {
            (long[] p, int[] docs, T[] k, T[] v) = _segments[0];
            return Frame.Of<long, int, T, T>(p, docs, k, v);
        }

        long[] positions = _segments.SelectMany(s => s.Positions).ToArray();
        int[] documents = _segments.SelectMany(s => s.Documents).ToArray();
        T[] key = _segments.SelectMany(s => s.Key).ToArray();
        T[] value = _segments.SelectMany(s => s.Value).ToArray();
        return Frame.Of<long, int, T, T>(positions, documents, key, value);
    }

    private async Task<(long[] Positions, int[] Documents, T[] Query, T[] Key, T[] Value, int[] MemberRows)> ScatterAsync(
        IExchange exchange, LayoutPlan plan, RankInput<T> input, CancellationToken cancellationToken)
    {
        int degree = plan.UlyssesDegree;
        int member = plan.MemberOf(Rank);
        int ring = plan.RingOf(Rank);
        if (degree == 1)
        {
            return (input.Positions, input.Documents, input.Query, input.Key, input.Value, [input.Positions.Length]);
        }

        for (int m = 0; m < degree; m++)
        {
            if (m == member)
            {
                continue;
            }

            using Frame frame = HeadSlice(plan, input, m);
            await exchange.SendAsync(plan.RankAt(ring, m), frame, cancellationToken).ConfigureAwait(false);
        }

        var parts = new Frame[degree];
        try
        {
            for (int m = 0; m < degree; m++)
            {
                parts[m] = m == member
                    ? HeadSlice(plan, input, m)
                    : await ReceiveAsync(exchange, plan.RankAt(ring, m), cancellationToken).ConfigureAwait(false);
            }

            int[] memberRows = parts.Select(p => p.Section<long>(0).Length).ToArray();
            return (
                Concat<long>(parts, 0),
                Concat<int>(parts, 1),
                Concat<T>(parts, 2),
                Concat<T>(parts, 3),
                Concat<T>(parts, 4),
                memberRows);
        }
        finally
        {
            foreach (Frame? part in parts)
            {
                part?.Dispose();
            }
        }
    }

    /// <summary>This rank's rows, restricted to the query and KV heads of Ulysses member <paramref name="member"/>.</summary>
    private Frame HeadSlice(LayoutPlan plan, RankInput<T> input, int member)
    {
        int d = _headDim;
        int n = input.Positions.Length;
        (int qFirst, int qCount) = plan.QueryHeadsOf(member);
        (int kvFirst, int kvCount) = plan.KeyValueHeadsOf(member);
        int elementSize = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        Frame frame = Frame.Create(n * sizeof(long), input.Documents.Length * sizeof(int), n * qCount * d * elementSize, n * kvCount * d * elementSize, n * kvCount * d * elementSize);
        input.Positions.CopyTo(frame.Section<long>(0));
        input.Documents.CopyTo(frame.Section<int>(1));
        CopyHeads(input.Query, plan.QueryHeads, qFirst, qCount, frame.Section<T>(2));
        CopyHeads(input.Key, plan.KeyValueHeads, kvFirst, kvCount, frame.Section<T>(3));
        CopyHeads(input.Value, plan.KeyValueHeads, kvFirst, kvCount, frame.Section<T>(4));
        return frame;
    }

    private void CopyHeads(ReadOnlySpan<T> source, int heads, int first, int count, Span<T> destination)
    {
        int d = _headDim;
        int rows = source.Length / (heads * d);
        for (int r = 0; r < rows; r++)
        {
            source.Slice(((r * heads) + first) * d, count * d).CopyTo(destination.Slice(r * count * d, count * d));
        }
    }

    private async Task<(float[] Output, float[] LogSumExp)> GatherAsync(
        IExchange exchange, LayoutPlan plan, int ownRows, int[] memberRows, float[] accO, float[] accL, CancellationToken cancellationToken)
    {
        int degree = plan.UlyssesDegree;
        if (degree == 1)
        {
            return (accO, accL);
        }

        int d = _headDim;
        int member = plan.MemberOf(Rank);
        int ring = plan.RingOf(Rank);
        int qHeads = plan.QueryHeads / degree;
        int offset = 0;
        for (int m = 0; m < degree; m++)
        {
            int rows = memberRows[m];
            if (m != member)
            {
                using Frame frame = Frame.Create(rows * qHeads * d * sizeof(float), rows * qHeads * sizeof(float));
                accO.AsSpan(offset * qHeads * d, rows * qHeads * d).CopyTo(frame.Section<float>(0));
                accL.AsSpan(offset * qHeads, rows * qHeads).CopyTo(frame.Section<float>(1));
                await exchange.SendAsync(plan.RankAt(ring, m), frame, cancellationToken).ConfigureAwait(false);
            }

            offset += rows;
        }

        float[] output = ArrayPool<float>.Shared.Rent(ownRows * plan.QueryHeads * d);
        float[] lse = ArrayPool<float>.Shared.Rent(ownRows * plan.QueryHeads);
        int ownOffset = memberRows.Take(member).Sum();
        for (int m = 0; m < degree; m++)
        {
            int first = m * qHeads;
            if (m == member)
            {
                Place(accO.AsSpan(ownOffset * qHeads * d, ownRows * qHeads * d), accL.AsSpan(ownOffset * qHeads, ownRows * qHeads), first);
                continue;
            }

            using Frame frame = await ReceiveAsync(exchange, plan.RankAt(ring, m), cancellationToken).ConfigureAwait(false);
            Place(frame.Section<float>(0), frame.Section<float>(1), first);
        }

        ArrayPool<float>.Shared.Return(accO);
        ArrayPool<float>.Shared.Return(accL);
        return (output, lse);

        void Place(ReadOnlySpan<float> o, ReadOnlySpan<float> l, int firstHead)
        {
            for (int r = 0; r < ownRows; r++)
            {
                o.Slice(r * qHeads * d, qHeads * d).CopyTo(output.AsSpan(((r * plan.QueryHeads) + firstHead) * d));
                l.Slice(r * qHeads, qHeads).CopyTo(lse.AsSpan((r * plan.QueryHeads) + firstHead));
            }
        }
    }

    private async ValueTask<Frame> ReceiveAsync(IExchange exchange, int source, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(ReceiveTimeout);
        try
        {
            return await exchange.ReceiveAsync(source, deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"no frame from rank {source} within {ReceiveTimeout.TotalSeconds:0.###} s");
        }
    }

    private static TElement[] Concat<TElement>(Frame[] parts, int section)
        where TElement : unmanaged
    {
        var result = new TElement[parts.Sum(p => p.Section<TElement>(section).Length)];
        int offset = 0;
        foreach (Frame part in parts)
        {
            Span<TElement> span = part.Section<TElement>(section);
            span.CopyTo(result.AsSpan(offset));
            offset += span.Length;
        }

        return result;
    }
}
