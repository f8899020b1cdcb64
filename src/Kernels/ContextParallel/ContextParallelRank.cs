using System.Buffers;
using System.Diagnostics;
using LongCluster.Kernels.Backends;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// One rank of a context-parallel sequence. It keeps its KV for every chunk so far (sequence-sharded for ring
/// layouts, head-sharded for Ulysses and hybrid) and, for each new chunk: reads its rows from the caller's memory
/// (in a Ulysses group, scatters Q/K/V all-to-all) straight into a new KV segment and a pooled Q buffer, runs the
/// ring — at each step the block it holds is already on its way to the next rank while it computes on it — merging
/// the per-step partials by LSE in step order, and writes O back into the caller's memory (in a Ulysses group,
/// gathered all-to-all). A block that none of its queries can see costs no compute. Its segments are pooled buffers:
/// <see cref="Dispose"/> hands them back, so that the next sequence reuses memory already mapped.
/// </summary>
public sealed class ContextParallelRank<T> : IDisposable
    where T : unmanaged
{
    // One frame per segment, laid out as a KeyValueFrame, so the ring sends a stored segment as it is, without a copy;
    // from LargeBuffers, so a new sequence reuses mapped memory (the price: power-of-two rounding while it lives).
    private readonly List<Frame> _segments = [];

    /// <summary>
    /// Per segment: −1 for a chunk's segment; for appended rows (decode), the level of a log-structured merge — a
    /// row's own segment is level 0, <see cref="AppendMergeWidth"/> segments of level L merge into one of level L + 1 —
    /// so n decoded tokens cost O(width · log n) segments, not n, on every later attend.
    /// </summary>
    private readonly List<int> _levels = [];

    /// <summary>Per segment: the backend's copy of its K and V where the backend computes (device memory), or null (the CPU backend, or no room).</summary>
    private readonly List<IKeptKeyValue?> _kept = [];

    /// <summary>How many appended segments of one level are merged into one.</summary>
    internal const int AppendMergeWidth = 16;
    private readonly int _headDim;
    // Kept as counts rather than summed over the segments: a service reads them beside a call that adds or frees segments.
    private long _storedRows;
    private long _storedBytes;

    public ContextParallelRank(int rank, int headDim)
    {
        Rank = rank;
        _headDim = headDim;
    }

    public int Rank { get; }

    /// <summary>
    /// What computes the blocks: the CPU SIMD kernels by default, or a GPU backend, which keeps a copy of every stored
    /// segment in device memory for as long as the rank holds it (ring blocks from peers are copied for each step).
    /// The data plane — segments, ring frames, partial merges — stays in host memory either way.
    /// </summary>
    public IAttentionBackend Backend { get; init; } = CpuBackend.Instance;

    /// <summary>Rows of KV this rank holds (all chunks).</summary>
    public long StoredRows => Volatile.Read(ref _storedRows);

    /// <summary>Bytes of K, V, positions and document ids this rank holds.</summary>
    public long StoredBytes => Volatile.Read(ref _storedBytes);

    /// <summary>KV segments held (one per chunk or appended decode row); <see cref="Truncate"/> rolls back to a count.</summary>
    public int SegmentCount => _segments.Count;

    /// <summary>Returns every segment to the pool; the rank holds no KV afterwards. Not while a chunk runs on it.</summary>
    public void Dispose() => Truncate(0);

    /// <summary>Drops the segments added after the first <paramref name="segments"/> (a chunk that failed part-way), returning their buffers to the pool.</summary>
    public void Truncate(int segments)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(segments);
        for (int i = _segments.Count - 1; i >= segments; i--)
        {
            Frame segment = _segments[i];
            _segments.RemoveAt(i);
            _levels.RemoveAt(i);
            _kept[i]?.Dispose();
            _kept.RemoveAt(i);
            Count(segment, -1);
            segment.Dispose();
        }
    }

    /// <summary>
    /// Appends KV rows this rank owns without a ring pass (a decoded token): K and V <c>[n, kvHeads, d]</c> for
    /// this rank's KV heads. The rows are copied. Earlier appended rows may first be merged into fewer segments;
    /// returns the segment count to <see cref="Truncate"/> to that undoes exactly this append.
    /// </summary>
    public int Append(long[] positions, int[] documents, ReadOnlySpan<T> key, ReadOnlySpan<T> value)
    {
        ArgumentNullException.ThrowIfNull(positions);
        ArgumentNullException.ThrowIfNull(documents);
        if (key.Length != value.Length)
        {
            throw new ArgumentException($"key has {key.Length} elements and value {value.Length}; they must match", nameof(value));
        }

        MergeAppended();
        int undo = _segments.Count;
        Frame segment = KeyValueFrame<T>.Create(positions.Length, documents.Length, key.Length, stored: true);
        var stored = new KeyValueFrame<T>(segment);
        positions.CopyTo(stored.Positions);
        documents.CopyTo(stored.Documents);
        key.CopyTo(stored.Key);
        value.CopyTo(stored.Value);
        Add(segment, level: 0);
        return undo;
    }

    /// <summary>While the last <see cref="AppendMergeWidth"/> segments are appended ones of one level, merges them into one of the next level.</summary>
    private void MergeAppended()
    {
        while (_segments.Count >= AppendMergeWidth)
        {
            int first = _segments.Count - AppendMergeWidth;
            int level = _levels[first];
            if (level < 0 || _levels.Skip(first).Any(l => l != level))
            {
                return;
            }

            Frame merged = Concatenate(_segments.GetRange(first, AppendMergeWidth), stored: true);
            Truncate(first);
            Add(merged, level + 1);
        }
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
        float[] partO = LargeBuffers<float>.Pool.Rent((int)shape.QueryElements);
        float[] partL = LargeBuffers<float>.Pool.Rent((int)shape.LseElements);
        try
        {
            bool computed = false;
            TileRange queries = TileRange.Of(positions, mask.Document ? documents : default);
            Span<float> po = partO.AsSpan(0, output.Length);
            Span<float> pl = partL.AsSpan(0, logSumExp.Length);
            for (int i = 0; i < _segments.Count; i++)
            {
                computed |= AttendBlock(
                    Backend, query, positions, documents, queries, new KeyValueFrame<T>(_segments[i]), _kept[i], shape, mask, options, computed, output, logSumExp, po, pl);
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
            LargeBuffers<float>.Pool.Return(partO);
            LargeBuffers<float>.Pool.Return(partL);
        }
    }

    /// <summary>How long a rank waits for any one frame from a peer before the chunk fails (a lost peer must not hang the run).</summary>
    public TimeSpan ReceiveTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Runs this rank's part of one chunk: reads its rows of <paramref name="view"/>, keeps its share of the chunk's KV
    /// as a new segment, attends its queries to every rank's KV around the ring, and writes its O and LSE rows into
    /// the view's output. Every rank of the chunk runs this at once, each on its own exchange endpoint.
    /// <paramref name="beforeWriting"/>, when given, is awaited after the ring and before anything is written to the
    /// view's output (ranks sharing one output wait there for each other, so that a chunk that fails writes nothing).
    /// </summary>
    public async Task<RankTimings> PrefillChunkAsync(
        IExchange exchange, LayoutPlan plan, RankView<T> view, AttentionMask mask, AttentionOptions options, Func<CancellationToken, Task>? beforeWriting,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(exchange);
        ArgumentNullException.ThrowIfNull(plan);
        view.Validate(plan.QueryHeads, plan.KeyValueHeads, _headDim);
        string step = "scatter all-to-all";
        long started = Stopwatch.GetTimestamp();
        TimeSpan compute = TimeSpan.Zero;
        TimeSpan waiting = TimeSpan.Zero;
        T[]? query = null;
        float[]? accO = null;
        float[]? accL = null;
        try
        {
            int member = plan.MemberOf(Rank);
            int ring = plan.RingOf(Rank);
            (_, int qHeads) = plan.QueryHeadsOf(member);
            (_, int kvHeads) = plan.KeyValueHeadsOf(member);

            // Rows that are one run of the view's (a contiguous layout, a service shard's own rows) need no Q buffer: the
            // kernel reads them where the caller has them.
            int run = plan.UlyssesDegree == 1 ? view.FirstRowOfOneRun() : -1;

            // 1. Scatter: this rank's rows — in a Ulysses group, all the group's rows for its own heads — go once into
            //    a new KV segment and (unless they are one run) a pooled Q buffer.
            (Frame segment, query, int[] memberRows) = await ScatterAsync(exchange, plan, view, copyQuery: run < 0, cancellationToken).ConfigureAwait(false);
            Add(segment);
            TimeSpan scatter = Stopwatch.GetElapsedTime(started);

            // 2. Ring over the ranks that hold the same heads: exact partials merged by LSE in step order.
            var shape = new AttentionShape(new KeyValueFrame<T>(segment).Rows, 0, qHeads, kvHeads, _headDim);
            int queryElements = (int)shape.QueryElements;
            int lseElements = (int)shape.LseElements;
            ReadOnlyMemory<T> queryRows = query is null ? view.Query.Slice(run * qHeads * _headDim, queryElements) : query.AsMemory(0, queryElements);
            // Pooled: every element used is written before it is read (the first live block goes straight into acc).
            // Not the caller's output: that is written only once every rank has finished its ring (see GatherAsync).
            accO = LargeBuffers<float>.Pool.Rent(queryElements);
            accL = LargeBuffers<float>.Pool.Rent(lseElements);
            float[] partO = LargeBuffers<float>.Pool.Rent(queryElements);
            float[] partL = LargeBuffers<float>.Pool.Rent(lseElements);
            bool computed = false;
            TileRange queries = QueryRange(segment, mask);
            int ringSize = plan.RingDegree;
            int next = plan.RankAt((ring + 1) % ringSize, member);
            int previous = plan.RankAt((ring - 1 + ringSize) % ringSize, member);
            Frame current = StoreFrame();
            // The backend's copy of the block being computed: a stored segment's own (not ours to free), or one staged for
            // this step (a peer's block, or the concatenated store), freed after it.
            IKeptKeyValue? currentKept = _segments.Count == 1 ? _kept[0] : Stage(current);
            bool ownsKept = _segments.Count != 1;
            Task<(Frame Block, IKeptKeyValue? Kept)>? incoming = null;
            try
            {
                for (int s = 0; s < ringSize; s++)
                {
                    step = $"ring step {s + 1} of {ringSize}";
                    incoming = null;
                    if (s < ringSize - 1)
                    {
                        // Double buffering: the block goes out and the next one is awaited before this one is computed; a
                        // backend that computes elsewhere (a GPU) gets its copy as soon as it arrives, while this one computes.
                        await exchange.SendAsync(next, current, cancellationToken).ConfigureAwait(false);
                        incoming = ReceiveAndStageAsync(exchange, previous, cancellationToken);
                    }

                    long computing = Stopwatch.GetTimestamp();
                    (Frame block, IKeptKeyValue? blockKept, bool accumulate, float[] o, float[] l) = (current, currentKept, computed, accO, accL);
                    computed |= await OnOwnThread(() => AttendBlock(
                        Backend, queryRows.Span, new KeyValueFrame<T>(segment).Positions, new KeyValueFrame<T>(segment).Documents, queries, new KeyValueFrame<T>(block),
                        blockKept, shape, mask, options, accumulate,
                        o.AsSpan(0, queryElements), l.AsSpan(0, lseElements), partO.AsSpan(0, queryElements), partL.AsSpan(0, lseElements))).ConfigureAwait(false);
                    compute += Stopwatch.GetElapsedTime(computing);
                    if (incoming is not null)
                    {
                        long waited = Stopwatch.GetTimestamp();
                        (Frame received, IKeptKeyValue? staged) = await incoming.ConfigureAwait(false);
                        incoming = null;
                        waiting += Stopwatch.GetElapsedTime(waited);
                        if (ownsKept)
                        {
                            currentKept?.Dispose();
                        }

                        current.Dispose();
                        current = received;
                        currentKept = staged;
                        ownsKept = true;
                    }
                }
            }
            finally
            {
                if (ownsKept)
                {
                    currentKept?.Dispose();
                }

                // A step that failed leaves the next block on its way: free it (and its staged copy) whenever it arrives.
                _ = incoming?.ContinueWith(
                    static arrived =>
                    {
                        arrived.Result.Kept?.Dispose();
                        arrived.Result.Block.Dispose();
                    },
                    CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                current.Dispose();
                LargeBuffers<float>.Pool.Return(partO);
                LargeBuffers<float>.Pool.Return(partL);
            }

            if (!computed)
            {
                // No key visible to any of this rank's queries: O = 0, LSE = −∞.
                accO.AsSpan(0, queryElements).Clear();
                accL.AsSpan(0, lseElements).Fill(float.NegativeInfinity);
            }

            // 3. Gather: O rows go into the caller's memory, through the members that own the tokens in a Ulysses group.
            step = "gather all-to-all";
            long gathering = Stopwatch.GetTimestamp();
            if (beforeWriting is not null)
            {
                await beforeWriting(cancellationToken).ConfigureAwait(false);
            }

            await GatherAsync(exchange, plan, view, memberRows, accO, accL, cancellationToken).ConfigureAwait(false);

            return new RankTimings(scatter, compute, waiting, Stopwatch.GetElapsedTime(gathering));
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw new ContextParallelException(Rank, step, e);
        }
        finally
        {
            if (query is not null)
            {
                LargeBuffers<T>.Pool.Return(query);
            }

            if (accO is not null)
            {
                LargeBuffers<float>.Pool.Return(accO);
            }

            if (accL is not null)
            {
                LargeBuffers<float>.Pool.Return(accL);
            }
        }
    }

    private void Add(Frame segment, int level = -1)
    {
        var rows = new KeyValueFrame<T>(segment);
        _kept.Add(Backend.Keep<T>(rows.Key, rows.Value));
        _segments.Add(segment);
        _levels.Add(level);
        Count(segment, +1);
    }

    private void Count(Frame segment, int sign)
    {
        var stored = new KeyValueFrame<T>(segment);
        Volatile.Write(ref _storedRows, _storedRows + (sign * stored.Rows));
        Volatile.Write(ref _storedBytes, _storedBytes + (sign * stored.PayloadBytes));
    }

    /// <summary>The ring's query rows are the new segment's rows: their positions and documents bound what they can see.</summary>
    private static TileRange QueryRange(Frame segment, AttentionMask mask)
    {
        var rows = new KeyValueFrame<T>(segment);
        return TileRange.Of(rows.Positions, mask.Document ? rows.Documents : default);
    }

    /// <summary>Query rows up to which stored KV is attended by the decode kernel rather than the tiled forward kernel.</summary>
    private const int DecodeRows = 4;

    /// <summary>
    /// Runs a ring step's kernel on a thread of its own. The step computes for up to seconds without yielding; on a
    /// thread-pool thread it held one of the pool's threads (as many as cores), and a silo on one core had none left to
    /// read the next block, which then waited until the pool added a thread, up to a second later (bench scaling, 2
    /// silos on a core each: 0.9–2.3 s of waiting in a layer). Raising the pool's floor instead cost decode steps,
    /// which run on the pool, a fifth of their time (more runnable threads than cores).
    /// </summary>
    private static Task<bool> OnOwnThread(Func<bool> compute) =>
        Task.Factory.StartNew(compute, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>
    /// Attends the queries to one KV block: into (<paramref name="output"/>, <paramref name="logSumExp"/>) directly for
    /// the first visible block, otherwise into the partial buffers and merged by LSE. Returns false (and computes
    /// nothing) when the mask hides the block entirely.
    /// </summary>
    private static bool AttendBlock(
        IAttentionBackend backend, ReadOnlySpan<T> query, ReadOnlySpan<long> positions, ReadOnlySpan<int> documents, TileRange queries, KeyValueFrame<T> keys,
        IKeptKeyValue? kept, AttentionShape shape, AttentionMask mask, AttentionOptions options, bool accumulate,
        Span<float> output, Span<float> logSumExp, Span<float> partOutput, Span<float> partLogSumExp)
    {
        if (keys.Rows == 0 || positions.Length == 0
            || mask.Classify(queries, TileRange.Of(keys.Positions, mask.Document ? keys.Documents : default)) == TileVisibility.Hidden)
        {
            return false;
        }

        var tokens = new AttentionTokens(positions, keys.Positions, mask.Document ? documents : default, mask.Document ? keys.Documents : default);
        if (positions.Length <= DecodeRows)
        {
            // A decode step: split-K over the stored keys, no tile packing for a handful of query rows.
            backend.Decode<T>(
                query, keys.Key, keys.Value, shape with { KeyTokens = keys.Rows }, mask, tokens, accumulate ? partOutput : output, accumulate ? partLogSumExp : logSumExp, options, kept);
        }
        else
        {
            backend.Forward<T>(
                query, keys.Key, keys.Value, shape with { KeyTokens = keys.Rows }, mask, tokens, accumulate ? partOutput : output, accumulate ? partLogSumExp : logSumExp, options, kept);
        }
        if (accumulate)
        {
            Attention.MergePartials(output, logSumExp, partOutput, partLogSumExp, output, logSumExp, shape.HeadDim);
        }

        return true;
    }

    /// <summary>
    /// All of this rank's stored KV as one frame: the one segment itself when there is one (another reference, no copy),
    /// else the segments concatenated in the order they were stored into a pooled frame.
    /// </summary>
    private Frame StoreFrame() => _segments.Count == 1 ? _segments[0].Retain() : Concatenate(_segments, stored: false);

    /// <summary>Segments concatenated, in order, into one pooled frame (<paramref name="stored"/>: from the segment pool, to keep).</summary>
    private static Frame Concatenate(List<Frame> segments, bool stored)
    {
        int rows = 0;
        int documents = 0;
        int elements = 0;
        foreach (Frame segment in segments)
        {
            var part = new KeyValueFrame<T>(segment);
            rows += part.Rows;
            documents += part.Documents.Length;
            elements = checked(elements + part.Key.Length);
        }

        Frame frame = KeyValueFrame<T>.Create(rows, documents, elements, stored);
        var all = new KeyValueFrame<T>(frame);
        int row = 0;
        int document = 0;
        int element = 0;
        foreach (Frame segment in segments)
        {
            var part = new KeyValueFrame<T>(segment);
            part.Positions.CopyTo(all.Positions[row..]);
            part.Documents.CopyTo(all.Documents[document..]);
            part.Key.CopyTo(all.Key[element..]);
            part.Value.CopyTo(all.Value[element..]);
            row += part.Rows;
            document += part.Documents.Length;
            element += part.Key.Length;
        }

        return frame;
    }

    /// <summary>
    /// The rows this rank attends for the chunk, as a new KV segment and, if <paramref name="copyQuery"/>, a pooled Q
    /// buffer <c>[rows, qHeads, d]</c> (the caller returns it), and how many of them came from each Ulysses member (the
    /// gather sends each its own).
    /// </summary>
    private async Task<(Frame Segment, T[]? Query, int[] MemberRows)> ScatterAsync(
        IExchange exchange, LayoutPlan plan, RankView<T> view, bool copyQuery, CancellationToken cancellationToken)
    {
        int degree = plan.UlyssesDegree;
        int member = plan.MemberOf(Rank);
        int ring = plan.RingOf(Rank);
        var parts = new Frame?[degree];
        try
        {
            for (int m = 0; m < degree; m++)
            {
                if (m != member)
                {
                    using Frame frame = HeadSlice(plan, view, m);
                    await exchange.SendAsync(plan.RankAt(ring, m), frame, cancellationToken).ConfigureAwait(false);
                }
            }

            for (int m = 0; m < degree; m++)
            {
                if (m != member)
                {
                    parts[m] = await ReceiveAsync(exchange, plan.RankAt(ring, m), cancellationToken).ConfigureAwait(false);
                }
            }

            return Assemble(plan, view, parts, member, copyQuery);
        }
        finally
        {
            foreach (Frame? part in parts)
            {
                part?.Dispose();
            }
        }
    }

    /// <summary>
    /// Fills the new segment and Q buffer in member order: this rank's own rows straight from the caller's view (its
    /// own heads), every other member's from the frame it sent.
    /// </summary>
    private (Frame Segment, T[]? Query, int[] MemberRows) Assemble(LayoutPlan plan, RankView<T> view, Frame?[] parts, int member, bool copyQuery)
    {
        int d = _headDim;
        (int qFirst, int qHeads) = plan.QueryHeadsOf(member);
        (int kvFirst, int kvHeads) = plan.KeyValueHeadsOf(member);
        int qRow = qHeads * d;
        int kvRow = kvHeads * d;
        int ownRows = view.Rows.Length;
        int ownDocuments = view.Documents.IsEmpty ? 0 : ownRows;
        var memberRows = new int[parts.Length];
        int rows = 0;
        int documents = 0;
        for (int m = 0; m < parts.Length; m++)
        {
            if (m == member)
            {
                memberRows[m] = ownRows;
                documents += ownDocuments;
            }
            else
            {
                var part = new ScatterFrame<T>(parts[m]!);
                if (part.Query.Length != (long)part.Rows * qRow || part.Key.Length != (long)part.Rows * kvRow || part.Value.Length != part.Key.Length)
                {
                    throw new InvalidDataException($"the scatter frame from member {m} does not hold {part.Rows} rows of {qHeads} query and {kvHeads} KV heads");
                }

                memberRows[m] = part.Rows;
                documents += part.Documents.Length;
            }

            rows += memberRows[m];
        }

        Frame segment = KeyValueFrame<T>.Create(rows, documents, checked(rows * kvRow), stored: true);
        // Other members' rows always need the buffer: only a rank's own rows can be one run of the caller's.
        T[]? query = copyQuery || parts.Length > 1 ? LargeBuffers<T>.Pool.Rent(checked(rows * qRow)) : null;
        try
        {
            var stored = new KeyValueFrame<T>(segment);
            Span<T> q = query is null ? default : query.AsSpan(0, rows * qRow);
            int row = 0;
            int document = 0;
            for (int m = 0; m < parts.Length; m++)
            {
                if (m == member)
                {
                    ReadOnlySpan<long> offsets = view.Rows.Span;
                    CopyRows(view.Positions.Span, 1, 0, 1, offsets, stored.Positions.Slice(row, ownRows));
                    if (ownDocuments > 0)
                    {
                        CopyRows(view.Documents.Span, 1, 0, 1, offsets, stored.Documents.Slice(document, ownDocuments));
                    }

                    if (query is not null)
                    {
                        CopyRows(view.Query.Span, plan.QueryHeads * d, qFirst * d, qRow, offsets, q.Slice(row * qRow, ownRows * qRow));
                    }

                    CopyRows(view.Key.Span, plan.KeyValueHeads * d, kvFirst * d, kvRow, offsets, stored.Key.Slice(row * kvRow, ownRows * kvRow));
                    CopyRows(view.Value.Span, plan.KeyValueHeads * d, kvFirst * d, kvRow, offsets, stored.Value.Slice(row * kvRow, ownRows * kvRow));
                    document += ownDocuments;
                }
                else
                {
                    var part = new ScatterFrame<T>(parts[m]!);
                    part.Positions.CopyTo(stored.Positions[row..]);
                    part.Documents.CopyTo(stored.Documents[document..]);
                    part.Query.CopyTo(q[(row * qRow)..]);
                    part.Key.CopyTo(stored.Key[(row * kvRow)..]);
                    part.Value.CopyTo(stored.Value[(row * kvRow)..]);
                    document += part.Documents.Length;
                }

                row += memberRows[m];
            }

            return (segment, query, memberRows);
        }
        catch
        {
            if (query is not null)
            {
                LargeBuffers<T>.Pool.Return(query);
            }

            throw;
        }
    }

    /// <summary>This rank's rows, restricted to the query and KV heads of Ulysses member <paramref name="member"/>, in a pooled frame.</summary>
    private Frame HeadSlice(LayoutPlan plan, RankView<T> view, int member)
    {
        int d = _headDim;
        int n = view.Rows.Length;
        int documents = view.Documents.IsEmpty ? 0 : n;
        (int qFirst, int qHeads) = plan.QueryHeadsOf(member);
        (int kvFirst, int kvHeads) = plan.KeyValueHeadsOf(member);
        Frame frame = ScatterFrame<T>.Create(n, documents, qHeads * d, kvHeads * d);
        var slice = new ScatterFrame<T>(frame);
        ReadOnlySpan<long> offsets = view.Rows.Span;
        CopyRows(view.Positions.Span, 1, 0, 1, offsets, slice.Positions);
        if (documents > 0)
        {
            CopyRows(view.Documents.Span, 1, 0, 1, offsets, slice.Documents);
        }

        CopyRows(view.Query.Span, plan.QueryHeads * d, qFirst * d, qHeads * d, offsets, slice.Query);
        CopyRows(view.Key.Span, plan.KeyValueHeads * d, kvFirst * d, kvHeads * d, offsets, slice.Key);
        CopyRows(view.Value.Span, plan.KeyValueHeads * d, kvFirst * d, kvHeads * d, offsets, slice.Value);
        return frame;
    }

    /// <summary>
    /// Writes this rank's results into the view's output at its rows: all heads from its own accumulator, or in a
    /// Ulysses group, its own heads from its accumulator and each other member's heads from the frame it sent back.
    /// </summary>
    private async Task GatherAsync(
        IExchange exchange, LayoutPlan plan, RankView<T> view, int[] memberRows, float[] accO, float[] accL, CancellationToken cancellationToken)
    {
        int d = _headDim;
        int member = plan.MemberOf(Rank);
        int ring = plan.RingOf(Rank);
        (int qFirst, int qHeads) = plan.QueryHeadsOf(member);
        int offset = 0;
        int ownOffset = 0;
        for (int m = 0; m < memberRows.Length; m++)
        {
            int rows = memberRows[m];
            if (m == member)
            {
                ownOffset = offset;
            }
            else
            {
                using Frame frame = GatherFrame.Create(rows, qHeads, d);
                FillGatherFrame(frame, accO.AsSpan(offset * qHeads * d, rows * qHeads * d), accL.AsSpan(offset * qHeads, rows * qHeads));
                await exchange.SendAsync(plan.RankAt(ring, m), frame, cancellationToken).ConfigureAwait(false);
            }

            offset += rows;
        }

        int ownRows = view.Rows.Length;
        WriteResults(plan, view, accO.AsSpan(ownOffset * qHeads * d, ownRows * qHeads * d), accL.AsSpan(ownOffset * qHeads, ownRows * qHeads), qFirst, qHeads);
        for (int m = 0; m < memberRows.Length; m++)
        {
            if (m != member)
            {
                using Frame frame = await ReceiveAsync(exchange, plan.RankAt(ring, m), cancellationToken).ConfigureAwait(false);
                WriteResults(plan, view, frame, m);
            }
        }
    }

    private static void FillGatherFrame(Frame frame, ReadOnlySpan<float> output, ReadOnlySpan<float> logSumExp)
    {
        var results = new GatherFrame(frame);
        output.CopyTo(results.Output);
        logSumExp.CopyTo(results.LogSumExp);
    }

    /// <summary>The results a Ulysses member sent back for this rank's rows: its own query heads.</summary>
    private void WriteResults(LayoutPlan plan, RankView<T> view, Frame frame, int member)
    {
        (int first, int heads) = plan.QueryHeadsOf(member);
        var results = new GatherFrame(frame);
        int rows = view.Rows.Length;
        if (results.Output.Length != (long)rows * heads * _headDim || results.LogSumExp.Length != (long)rows * heads)
        {
            throw new InvalidDataException($"the gather frame from member {member} does not hold {rows} rows of {heads} heads");
        }

        WriteResults(plan, view, results.Output, results.LogSumExp, first, heads);
    }

    /// <summary>O <c>[rows, heads, d]</c> and LSE <c>[rows, heads]</c> for query heads [first, first + heads) of the view's rows, into its output.</summary>
    private void WriteResults(LayoutPlan plan, RankView<T> view, ReadOnlySpan<float> output, ReadOnlySpan<float> logSumExp, int first, int heads)
    {
        int d = _headDim;
        ReadOnlySpan<long> offsets = view.Rows.Span;
        Span<float> o = view.Output.Span;
        Span<float> l = view.LogSumExp.Span;
        for (int i = 0; i < offsets.Length; i++)
        {
            int row = (int)offsets[i];
            output.Slice(i * heads * d, heads * d).CopyTo(o.Slice(((row * plan.QueryHeads) + first) * d, heads * d));
            logSumExp.Slice(i * heads, heads).CopyTo(l.Slice((row * plan.QueryHeads) + first, heads));
        }
    }

    /// <summary>
    /// Copies elements [<paramref name="first"/>, +<paramref name="count"/>) of the listed rows of <paramref name="source"/>
    /// (rows of <paramref name="rowLength"/> elements), in list order, into consecutive rows of <paramref name="destination"/>.
    /// </summary>
    private static void CopyRows<TElement>(ReadOnlySpan<TElement> source, int rowLength, int first, int count, ReadOnlySpan<long> rows, Span<TElement> destination)
    {
        for (int i = 0; i < rows.Length; i++)
        {
            source.Slice(((int)rows[i] * rowLength) + first, count).CopyTo(destination.Slice(i * count, count));
        }
    }

    /// <summary>A peer's ring block and, where the backend computes elsewhere, its copy there, made as soon as it arrives.</summary>
    private async Task<(Frame Block, IKeptKeyValue? Kept)> ReceiveAndStageAsync(IExchange exchange, int source, CancellationToken cancellationToken)
    {
        Frame block = await ReceiveAsync(exchange, source, cancellationToken).ConfigureAwait(false);
        try
        {
            return (block, Stage(block));
        }
        catch
        {
            block.Dispose();
            throw;
        }
    }

    /// <summary>The backend's copy of a block for one ring step (null from the CPU backend, or when its budget is full).</summary>
    private IKeptKeyValue? Stage(Frame block)
    {
        var rows = new KeyValueFrame<T>(block);
        return Backend.Keep<T>(rows.Key, rows.Value);
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
    }}
