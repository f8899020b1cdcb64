using LongCluster.Kernels.Backends;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// A sequence whose tokens and KV are spread over P in-process ranks by a <see cref="ContextLayout"/>; each
/// <see cref="PrefillAsync"/> adds a chunk that attends to every earlier chunk's KV and to itself under the mask, and
/// returns O and LSE in the chunk's token order — the same numbers as one node computing the whole sequence.
/// A chunk that fails on any rank fails as a whole (<see cref="ContextParallelException"/> naming the rank and
/// step), and the sequence is then unusable: some ranks may hold that chunk's KV and others not.
/// <see cref="Dispose"/> returns the ranks' KV buffers to the pool for the next sequence.
/// </summary>
public sealed class ShardedSequence<T> : IDisposable
    where T : unmanaged
{
    private ContextParallelRank<T>[]? _ranks;
    private readonly AttentionOptions _rankOptions;
    private bool _failed;
    private bool _disposed;
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

    /// <summary>Where the time of the last successful chunk went: on the caller before and after the ranks, and each rank's timings.</summary>
    public ChunkTimings? LastChunk { get; private set; }

    /// <summary>Tokens prefilled so far.</summary>
    public long Length { get; private set; }

    /// <summary>How long a rank waits for a frame from a peer before the chunk fails with a <see cref="TimeoutException"/>.</summary>
    public TimeSpan ReceiveTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>What computes every rank's blocks (<see cref="ContextParallelRank{T}.Backend"/>); the CPU SIMD kernels by default.</summary>
    public IAttentionBackend Backend { get; init; } = CpuBackend.Instance;

    /// <summary>Wraps each rank's exchange (tests use it to fail a rank on purpose).</summary>
    internal Func<IExchange, IExchange>? ExchangeDecorator { get; set; }

    /// <summary>
    /// Adds a chunk of n tokens. <paramref name="query"/> is <c>[n, Hq, d]</c>, <paramref name="key"/> and
    /// <paramref name="value"/> <c>[n, Hkv, d]</c>, in token order; <paramref name="positions"/> default to
    /// Length..Length+n−1; <paramref name="documents"/> (one id per token) are required by document masks.
    /// Writes O <c>[n, Hq, d]</c> and LSE <c>[n, Hq]</c>; the ranks read the inputs and write the outputs in place, so the
    /// caller leaves them alone until the call completes, and the outputs must not overlap the inputs. A chunk that fails
    /// in its ring leaves the outputs as they were (ranks write only once every ring is done).
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
        ObjectDisposedException.ThrowIf(_disposed, this);
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
            .Select(r => new ContextParallelRank<T>(r, HeadDim) { ReceiveTimeout = ReceiveTimeout, Backend = Backend })
            .ToArray();
        using var exchange = new InProcessExchange(Shards);
        using var failure = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // Ranks write the caller's output only once every ring is done, so a chunk that fails in its ring writes nothing.
        int ringsRunning = Shards;
        var ringsDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task AllRingsDone(CancellationToken token)
        {
            if (Interlocked.Decrement(ref ringsRunning) == 0)
            {
                ringsDone.SetResult();
            }

            return ringsDone.Task.WaitAsync(token);
        }

        var tasks = new Task<RankTimings>[Shards];
        for (int r = 0; r < Shards; r++)
        {
            int rank = r;
            IExchange endpoint = exchange.Rank(rank);
            endpoint = ExchangeDecorator?.Invoke(endpoint) ?? endpoint;
            // Each rank reads its own rows of the caller's tensors and writes its own rows of the caller's output, in
            // its own task: the rows move once, in parallel, and never through a per-rank copy of the whole chunk.
            var view = new RankView<T>(
                query, key, value, tokenPositions, Mask.Document ? documents : default, plan.RankTokenOffsets(rank), output, logSumExp);
            tasks[r] = Task.Run(
                async () =>
                {
                    try
                    {
                        return await ranks[rank].PrefillChunkAsync(endpoint, plan, view, Mask, _rankOptions, AllRingsDone, failure.Token).ConfigureAwait(false);
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

        TimeSpan distribute = System.Diagnostics.Stopwatch.GetElapsedTime(started);
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
        Length += n;
        _history.Add(tokenPositions, Mask.Document ? documents.Span : default);
        LastChunk = new ChunkTimings(
            distribute,
            System.Diagnostics.Stopwatch.GetElapsedTime(collecting),
            System.Diagnostics.Stopwatch.GetElapsedTime(started),
            tasks.Select(t => t.Result).ToArray());
    }

    /// <summary>Hands the ranks' KV back to the pool; the sequence cannot be used afterwards. Not while a chunk runs.</summary>
    public void Dispose()
    {
        _disposed = true;
        foreach (ContextParallelRank<T> rank in _ranks ?? [])
        {
            rank.Dispose();
        }

        _ranks = null;
    }
}

/// <summary>
/// Timings of one chunk: the caller's time before every rank was started (planning and starting them: each rank reads
/// its own rows, in its <see cref="RankTimings.Scatter"/>), its time after the last one finished (each rank writes its
/// own O rows, in its <see cref="RankTimings.Gather"/>), the whole call, and each rank's own split.
/// </summary>
public sealed record ChunkTimings(TimeSpan Distribute, TimeSpan Collect, TimeSpan Total, IReadOnlyList<RankTimings> Ranks);
