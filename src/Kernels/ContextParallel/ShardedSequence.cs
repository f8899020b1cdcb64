namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// A sequence whose tokens and KV are spread over P in-process ranks by a <see cref="ContextLayout"/>; each
/// <see cref="PrefillAsync"/> adds a chunk that attends to every earlier chunk's KV and to itself under the mask, and
/// returns O and LSE in the chunk's token order — the same numbers as one node computing the whole sequence.
/// A chunk that fails on any rank fails as a whole (<see cref="ContextParallelException"/> naming the rank and
/// step), and the sequence is then unusable: some ranks may hold that chunk's KV and others not.
/// </summary>
public sealed class ShardedSequence<T>
    where T : unmanaged
{
    private ContextParallelRank<T>[]? _ranks;
    private readonly AttentionOptions _rankOptions;
    private bool _failed;
    private readonly ChunkHistory _history;

    public ShardedSequence(ContextLayout layout, int shards, int queryHeads, int keyValueHeads, int headDim, AttentionMask mask, AttentionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(layout);
        new AttentionShape(0, 0, queryHeads, keyValueHeads, headDim).Validate();
        _ = new LayoutPlan(layout, shards, 0, queryHeads, keyValueHeads);
        Layout = layout;
        Shards = shards;
        QueryHeads = queryHeads;
        KeyValueHeads = keyValueHeads;
        HeadDim = headDim;
        Mask = mask;
        options ??= AttentionOptions.Default;
        _rankOptions = options with { MaxThreads = Math.Max(1, options.ResolveThreads() / shards) };
        _history = new ChunkHistory(mask);
    }

    public ContextLayout Layout { get; }

    public int Shards { get; }

    public int QueryHeads { get; }

    public int KeyValueHeads { get; }

    public int HeadDim { get; }

    public AttentionMask Mask { get; }

    /// <summary>Where the time of the last successful chunk went: scatter and gather on the caller, each rank's timings.</summary>
    public ChunkTimings? LastChunk { get; private set; }

    /// <summary>Tokens prefilled so far.</summary>
    public long Length { get; private set; }

    /// <summary>How long a rank waits for a frame from a peer before the chunk fails with a <see cref="TimeoutException"/>.</summary>
    public TimeSpan ReceiveTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Wraps each rank's exchange (tests use it to fail a rank on purpose).</summary>
    internal Func<IExchange, IExchange>? ExchangeDecorator { get; set; }

    /// <summary>
    /// Adds a chunk of n tokens. <paramref name="query"/> is <c>[n, Hq, d]</c>, <paramref name="key"/> and
    /// <paramref name="value"/> <c>[n, Hkv, d]</c>, in token order; <paramref name="positions"/> default to
    /// Length..Length+n−1; <paramref name="documents"/> (one id per token) are required by document masks.
    /// Writes O <c>[n, Hq, d]</c> and LSE <c>[n, Hq]</c>.
    /// </summary>
    public async Task PrefillAsync(
        ReadOnlyMemory<T> query,
        ReadOnlyMemory<T> key,
        ReadOnlyMemory<T> value,
        Memory<float> output,
        Memory<float> logSumExp,
        ReadOnlyMemory<long> positions = default,
        ReadOnlyMemory<int> documents = default,
        CancellationToken cancellationToken = default)
    {
        if (_failed)
        {
            throw new InvalidOperationException("an earlier chunk failed part-way, so the ranks' KV no longer agree; start a new sequence");
        }

        int d = HeadDim;
        if (query.Length % (QueryHeads * d) != 0)
        {
            throw new ArgumentException($"query has {query.Length} elements, not a multiple of Hq·d = {QueryHeads * d}", nameof(query));
        }

        int n = query.Length / (QueryHeads * d);
        var shape = new AttentionShape(n, n, QueryHeads, KeyValueHeads, d);
        Attention.ValidateCall(query.Span, key.Span, value.Span, shape, output.Span, logSumExp.Span);
        long[] tokenPositions = positions.IsEmpty ? Enumerable.Range(0, n).Select(i => Length + i).ToArray() : positions.ToArray();
        if (tokenPositions.Length != n)
        {
            throw new ArgumentException($"positions has {tokenPositions.Length} entries, expected one per token ({n})", nameof(positions));
        }

        if (Mask.Document && documents.Length != n)
        {
            throw new ArgumentException($"mask {Mask} needs one document id per token ({n}), got {documents.Length}", nameof(documents));
        }

        ReadOnlySpan<int> chunkDocuments = Mask.Document ? documents.Span : default;
        _history.EnsureCanAppend(tokenPositions, chunkDocuments);

        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        var plan = new LayoutPlan(Layout, Shards, n, QueryHeads, KeyValueHeads);
        ContextParallelRank<T>[] ranks = _ranks ??= Enumerable.Range(0, Shards)
            .Select(r => new ContextParallelRank<T>(r, HeadDim) { ReceiveTimeout = ReceiveTimeout })
            .ToArray();
        RankInput<T>[] inputs = Scatter(plan, query.Span, key.Span, value.Span, tokenPositions, chunkDocuments);

        TimeSpan distribute = System.Diagnostics.Stopwatch.GetElapsedTime(started);
        using var exchange = new InProcessExchange(Shards);
        using var failure = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var tasks = new Task<RankOutput>[Shards];
        for (int r = 0; r < Shards; r++)
        {
            int rank = r;
            IExchange endpoint = exchange.Rank(rank);
            endpoint = ExchangeDecorator?.Invoke(endpoint) ?? endpoint;
            tasks[r] = Task.Run(
                async () =>
                {
                    try
                    {
                        return await ranks[rank].PrefillChunkAsync(endpoint, plan, inputs[rank], Mask, _rankOptions, failure.Token).ConfigureAwait(false);
                    }
                    catch
                    {
                        // The others are waiting on this rank's frames: stop them rather than leave them hanging.
                        await failure.CancelAsync().ConfigureAwait(false);
                        throw;
                    }
                },
                CancellationToken.None);
        }

        try
        {
            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch
        {
            _failed = true;
            cancellationToken.ThrowIfCancellationRequested();
            ContextParallelException? cause = tasks
                .Where(t => t.IsFaulted)
                .Select(t => t.Exception!.InnerException)
                .OfType<ContextParallelException>()
                .FirstOrDefault(e => e.InnerException is not OperationCanceledException);
            throw cause ?? tasks.First(t => t.IsFaulted).Exception!.InnerException!;
        }

        long collecting = System.Diagnostics.Stopwatch.GetTimestamp();
        for (int r = 0; r < Shards; r++)
        {
            Gather(plan.RankTokens(r), tasks[r].Result, output.Span, logSumExp.Span);
            tasks[r].Result.Release();
        }

        LastChunk = new ChunkTimings(
            distribute,
            System.Diagnostics.Stopwatch.GetElapsedTime(collecting),
            System.Diagnostics.Stopwatch.GetElapsedTime(started),
            tasks.Select(t => t.Result.Timings).ToArray());

        Length += n;
        _history.Add(tokenPositions, Mask.Document ? documents.Span : default);
    }

    private RankInput<T>[] Scatter(LayoutPlan plan, ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, long[] positions, ReadOnlySpan<int> documents)
    {
        int qRow = QueryHeads * HeadDim;
        int kvRow = KeyValueHeads * HeadDim;
        var inputs = new RankInput<T>[Shards];
        for (int r = 0; r < Shards; r++)
        {
            ReadOnlySpan<long> tokens = plan.RankTokens(r);
            var q = new T[tokens.Length * qRow];
            var k = new T[tokens.Length * kvRow];
            var v = new T[tokens.Length * kvRow];
            var p = new long[tokens.Length];
            var docs = new int[documents.IsEmpty ? 0 : tokens.Length];
            for (int i = 0; i < tokens.Length; i++)
            {
                int t = (int)tokens[i];
                query.Slice(t * qRow, qRow).CopyTo(q.AsSpan(i * qRow));
                key.Slice(t * kvRow, kvRow).CopyTo(k.AsSpan(i * kvRow));
                value.Slice(t * kvRow, kvRow).CopyTo(v.AsSpan(i * kvRow));
                p[i] = positions[t];
                if (docs.Length > 0)
                {
                    docs[i] = documents[t];
                }
            }

            inputs[r] = new RankInput<T>(q, k, v, p, docs);
        }

        return inputs;
    }

    private void Gather(ReadOnlySpan<long> tokens, RankOutput result, Span<float> output, Span<float> logSumExp)
    {
        int oRow = QueryHeads * HeadDim;
        for (int i = 0; i < tokens.Length; i++)
        {
            int t = (int)tokens[i];
            result.Output.AsSpan(i * oRow, oRow).CopyTo(output.Slice(t * oRow));
            result.LogSumExp.AsSpan(i * QueryHeads, QueryHeads).CopyTo(logSumExp.Slice(t * QueryHeads));
        }
    }
}

/// <summary>
/// Timings of one chunk: copying the caller's rows out to the ranks (what an upload does in the service),
/// collecting O back, the whole call, and each rank's own split.
/// </summary>
public sealed record ChunkTimings(TimeSpan Distribute, TimeSpan Collect, TimeSpan Total, IReadOnlyList<RankTimings> Ranks);
