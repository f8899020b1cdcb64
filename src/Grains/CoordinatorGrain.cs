using System.Diagnostics;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Grains.Placement;

namespace LongCluster.Grains;

/// <summary>
/// The coordinator of one sequence. Its state (spec, shard keys, length, the chunk in flight, decode progress) is
/// changed only by non-reentrant calls, one at a time; the reentrant reads may run beside a long layer run and see
/// the state before or after it, never a torn chunk (each field is replaced whole). Placed by Orleans' default and
/// never collected while its silo lives (<see cref="KeepAliveAttribute"/>): its state is the sequence.
/// </summary>
[KeepAlive]
internal sealed class CoordinatorGrain(SiloResources resources, IClusterMembershipService membership, ILocalSiloDetails silo) : Grain, ICoordinatorGrain
{
    private SequenceModel? _model;
    private string _epoch = "";
    private string[] _keys = [];
    private string[] _silos = [];
    private volatile string? _problem;
    private SequenceState _state;
    private long _length;
    private ChunkHistory _history = null!;
    private ChunkPlan? _chunk;
    private long[] _chunkPositions = [];
    private int[] _chunkDocuments = [];
    private int _layersDone;
    private int _decodeLayersDone;
    private int _nextChunk;

    private string Id => this.GetPrimaryKeyString();

    public async Task<SequenceInfo> CreateAsync(SequenceSpec spec, CancellationToken cancellationToken)
    {
        if (_model is not null)
        {
            throw ServiceException.Conflict("id", $"sequence '{Id}' already exists");
        }

        SequenceModel model = SequenceModel.Of(spec);
        int shards = spec.Shards > 0 ? spec.Shards : membership.CurrentSnapshot.Members.Values.Count(m => m.Status == SiloStatus.Active);
        _ = model.Plan(shards, 0);
        string epoch = Guid.NewGuid().ToString("N")[..12];
        string[] keys = [.. Enumerable.Range(0, shards).Select(i => new ShardKey(Id, epoch, i, shards).ToString())];
        Task<ShardInfo>[] inits = [.. keys.Select((k, i) => Shard(k).InitAsync(new ShardSetup(Id, epoch, model.Spec with { Shards = shards }, i, shards), cancellationToken))];
        try
        {
            await Task.WhenAll(inits);
        }
        catch
        {
            // A refused shard (a silo's limit) refuses the sequence: free what the others took.
            await Task.WhenAll(keys.Select(k => IgnoreFailure(Shard(k).DeleteAsync(epoch, CancellationToken.None))));
            throw inits.Select(t => t.Exception?.InnerException).First(e => e is not null)!;
        }

        _model = model with { Spec = model.Spec with { Shards = shards } };
        _epoch = epoch;
        _keys = keys;
        _silos = [.. inits.Select(t => t.Result.Silo)];
        _state = SequenceState.Created;
        _history = new ChunkHistory(model.Mask);
        await GrainFactory.GetGrain<ISequenceDirectoryGrain>("all").AddAsync(Id, cancellationToken);
        return Info([.. inits.Select(t => t.Result)]);
    }

    public async Task<SequenceInfo> DescribeAsync(CancellationToken cancellationToken)
    {
        Require();
        var map = new ShardInfo[_keys.Length];
        await Task.WhenAll(_keys.Select(async (key, i) =>
        {
            try
            {
                map[i] = await Shard(key).DescribeAsync(_epoch, cancellationToken);
            }
            catch (Exception e) when (IsLost(e))
            {
                Degrade(i, e);
                map[i] = new ShardInfo(i, "", "", 0, 0);
            }
            catch (Exception e) when (IsUnreachable(e))
            {
                map[i] = new ShardInfo(i, "", $"unreachable: {e.Message}", 0, 0);
            }
        }));
        return Info(map);
    }

    public Task<ChunkPlan?> CurrentChunkAsync(CancellationToken cancellationToken)
    {
        Require();
        return Task.FromResult(_chunk);
    }

    public Task<ShardAddress> ShardAsync(int index, CancellationToken cancellationToken)
    {
        SequenceSpec spec = Require().Spec;
        if (index < 0 || index >= _keys.Length)
        {
            throw ServiceException.Invalid("shard", $"expected 0..{_keys.Length - 1}, got {index}");
        }

        return Task.FromResult(new ShardAddress(_keys[index], _epoch, _keys.Length, spec.QueryHeads, spec.HeadDim));
    }

    public async Task<ChunkPlan> BeginChunkAsync(ChunkRequest request, CancellationToken cancellationToken)
    {
        SequenceModel model = RequireHealthy();
        if (request is null || request.Tokens < 1)
        {
            throw ServiceException.Invalid("tokens", $"expected a chunk of at least 1 token, got {request?.Tokens ?? 0}");
        }

        if (_state == SequenceState.Prefilling)
        {
            throw ServiceException.Conflict("chunk", $"chunk {_chunk!.Index} is in flight ({_layersDone} of {model.Spec.Layers} layers done); finish it first");
        }

        if (_decodeLayersDone > 0)
        {
            throw ServiceException.Conflict("chunk", $"a decode step is in flight ({_decodeLayersDone} of {model.Spec.Layers} layers done); finish it first");
        }

        if (_length + request.Tokens > resources.Options.MaxTokensPerSequence)
        {
            throw ServiceException.Limit("tokens", $"the sequence holds {_length} tokens; {request.Tokens} more would pass the limit of {resources.Options.MaxTokensPerSequence} (MaxTokensPerSequence)");
        }

        int[] documents = request.Documents ?? [];
        if (model.Mask.Document && documents.Length != request.Tokens)
        {
            throw ServiceException.Invalid("documents", $"mask {model.Mask} needs one document id per token ({request.Tokens}), got {documents.Length}");
        }

        if (!model.Mask.Document && documents.Length > 0)
        {
            throw ServiceException.Invalid("documents", $"mask {model.Mask} takes no document ids");
        }

        long[] positions = [.. Enumerable.Range(0, request.Tokens).Select(i => _length + i)];
        try
        {
            _history.EnsureCanAppend(positions, documents);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("tokens", e.Message);
        }

        LayoutPlan plan = model.Plan(_keys.Length, request.Tokens);
        int index = _nextChunk;
        var rows = new ShardRows[_keys.Length];
        var begins = new Task[_keys.Length];
        for (int i = 0; i < _keys.Length; i++)
        {
            ReadOnlySpan<long> offsets = plan.RankTokens(i);
            long[] shardPositions = new long[offsets.Length];
            int[] shardDocuments = documents.Length == 0 ? [] : new int[offsets.Length];
            for (int r = 0; r < offsets.Length; r++)
            {
                shardPositions[r] = _length + offsets[r];
                if (shardDocuments.Length > 0)
                {
                    shardDocuments[r] = documents[offsets[r]];
                }
            }

            rows[i] = new ShardRows(i, "", offsets.Length, Runs(offsets));
            begins[i] = Shard(_keys[i]).BeginChunkAsync(_epoch, index, request.Tokens, shardPositions, shardDocuments, cancellationToken);
        }

        await Guard(begins);
        SequenceInfo info = await DescribeAsync(cancellationToken);
        _chunk = new ChunkPlan(Id, index, _length, request.Tokens, [.. rows.Select(r => r with { Endpoint = info.ShardMap[r.Index].Endpoint })]);
        _chunkPositions = positions;
        _chunkDocuments = documents;
        _nextChunk++;
        _layersDone = 0;
        _state = SequenceState.Prefilling;
        return _chunk;
    }

    public async Task<LayerRunResult> RunLayerAsync(int chunk, int layer, CancellationToken cancellationToken)
    {
        SequenceModel model = RequireHealthy();
        if (_state != SequenceState.Prefilling || _chunk is null || _chunk.Index != chunk)
        {
            throw ServiceException.Conflict("chunk", $"chunk {chunk} is not in flight ({(_chunk is null ? "no chunk was started" : $"the current chunk is {_chunk.Index}, {_layersDone} of {model.Spec.Layers} layers done")})");
        }

        if (layer < 0 || layer >= model.Spec.Layers)
        {
            throw ServiceException.Invalid("layer", $"expected 0..{model.Spec.Layers - 1}, got {layer}");
        }

        if (layer != _layersDone)
        {
            throw ServiceException.Conflict("layer", $"layers run in order: the next layer of chunk {chunk} is {_layersDone}, not {layer}");
        }

        long started = Stopwatch.GetTimestamp();
        var run = new ShardRun(_epoch, chunk, layer, Guid.NewGuid(), _keys, _silos);
        ISequenceShardGrain[] shards = [.. _keys.Select(Shard)];
        ShardTimings[] timings = await RunEverywhereAsync(
            shards.Select(s => s.RunLayerAsync(run, cancellationToken)).ToArray(),
            () => Task.WhenAll(shards.Select(s => IgnoreFailure(s.AbortRunAsync(run.Run, CancellationToken.None)))),
            () => Task.WhenAll(shards.Select(s => IgnoreFailure(s.RollBackRunAsync(run.Run, CancellationToken.None)))),
            $"layer {layer} of chunk {chunk}");
        // Every shard holds the layer's KV now: the layer is done, whatever happens to the clean-up below. Were a
        // failed commit to fail the call, the shards that did commit would have dropped the uploads a retry needs.
        _layersDone++;
        if (_layersDone == model.Spec.Layers)
        {
            _length += _chunk.Tokens;
            _history.Add(_chunkPositions, _chunkDocuments);
            _state = SequenceState.Ready;
        }

        try
        {
            await Guard(shards.Select(s => s.CommitLayerAsync(_epoch, chunk, layer, cancellationToken)));
        }
        catch (Exception e) when (IsUnreachable(e))
        {
            // A shard that cannot be told keeps its uploads until the next chunk; if its silo died, the next call
            // that needs it finds the sequence degraded.
        }

        return new LayerRunResult(chunk, layer, Stopwatch.GetElapsedTime(started).TotalSeconds, timings, Info([]));
    }

    public async Task<DecodeResult> DecodeAsync(int layer, TensorRows query, TensorRows key, TensorRows value, int document, CancellationToken cancellationToken)
    {
        SequenceModel model = RequireHealthy();
        SequenceSpec spec = model.Spec;
        if (_state == SequenceState.Prefilling)
        {
            throw ServiceException.Conflict("layer", $"chunk {_chunk!.Index} is in flight; finish its layers before decoding");
        }

        if (layer < 0 || layer >= spec.Layers)
        {
            throw ServiceException.Invalid("layer", $"expected 0..{spec.Layers - 1}, got {layer}");
        }

        if (layer != _decodeLayersDone)
        {
            throw ServiceException.Conflict("layer", $"decode runs the layers in order: the next layer of token {_length} is {_decodeLayersDone}, not {layer}");
        }

        model.CheckRows(query, "q", 1, spec.QueryHeads);
        model.CheckRows(key, "k", 1, spec.KeyValueHeads);
        model.CheckRows(value, "v", 1, spec.KeyValueHeads);
        if (_length + 1 > resources.Options.MaxTokensPerSequence)
        {
            throw ServiceException.Limit("tokens", $"the sequence holds {_length} tokens, its limit (MaxTokensPerSequence)");
        }

        long position = _length;
        int[] documents = model.Mask.Document ? [document] : [];
        try
        {
            _history.EnsureCanAppend([position], documents);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("q", e.Message);
        }

        long started = Stopwatch.GetTimestamp();
        LayoutPlan plan = model.Plan(_keys.Length, 0);
        int ownerRing = (int)(position % plan.RingDegree);
        ISequenceShardGrain[] shards = [.. _keys.Select(Shard)];
        bool[] owners = [.. Enumerable.Range(0, shards.Length).Select(i => plan.RingOf(i) == ownerRing)];
        DecodePartial[] partials = await RunEverywhereAsync(
            shards.Select((s, i) => s.DecodeAsync(new ShardDecode(_epoch, layer, position, document, owners[i], query, key, value), cancellationToken)).ToArray(),
            () => Task.CompletedTask,
            () => Task.WhenAll(shards.Where((_, i) => owners[i]).Select(s => IgnoreFailure(s.UndoDecodeAsync(_epoch, layer, position, CancellationToken.None)))),
            $"decode of token {position}, layer {layer}");

        (float[] output, float[] lse) = Merge(partials, spec.QueryHeads, spec.HeadDim);
        _decodeLayersDone++;
        if (_decodeLayersDone == spec.Layers)
        {
            _decodeLayersDone = 0;
            _length++;
            _history.Add([position], documents);
            _state = SequenceState.Ready;
        }

        return new DecodeResult(position, layer, output, lse, Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    public Task<bool> HoldsAsync(string epoch, CancellationToken cancellationToken)
    {
        if (_model is null)
        {
            DeactivateOnIdle();
        }

        return Task.FromResult(_model is not null && _epoch == epoch);
    }

    public async Task DeleteAsync(CancellationToken cancellationToken)
    {
        Require();
        await Task.WhenAll(_keys.Select(k => IgnoreFailure(Shard(k).DeleteAsync(_epoch, cancellationToken))));
        await GrainFactory.GetGrain<ISequenceDirectoryGrain>("all").RemoveAsync(Id, cancellationToken);
        _model = null;
        _keys = [];
        _state = SequenceState.Deleted;
        DeactivateOnIdle();
    }

    /// <summary>
    /// Merges the shards' decode partials: per head group (Ulysses members hold different query heads), a tree
    /// reduction in shard order — pairs (0,1), (2,3), … then pairs of those — so the result is reproducible.
    /// </summary>
    internal static (float[] Output, float[] LogSumExp) Merge(IReadOnlyList<DecodePartial> partials, int queryHeads, int headDim)
    {
        var output = new float[queryHeads * headDim];
        var lse = new float[queryHeads];
        foreach (IGrouping<int, DecodePartial> group in partials.GroupBy(p => p.QueryHeadFirst))
        {
            List<DecodePartial> level = [.. group];
            while (level.Count > 1)
            {
                var next = new List<DecodePartial>((level.Count + 1) / 2);
                for (int i = 0; i < level.Count; i += 2)
                {
                    if (i + 1 == level.Count)
                    {
                        next.Add(level[i]);
                        continue;
                    }

                    DecodePartial a = level[i];
                    DecodePartial b = level[i + 1];
                    var o = new float[a.Output.Length];
                    var l = new float[a.LogSumExp.Length];
                    Attention.MergePartials(a.Output, a.LogSumExp, b.Output, b.LogSumExp, o, l, headDim);
                    next.Add(a with { Output = o, LogSumExp = l });
                }

                level = next;
            }

            DecodePartial merged = level[0];
            merged.Output.CopyTo(output.AsSpan(merged.QueryHeadFirst * headDim));
            merged.LogSumExp.CopyTo(lse.AsSpan(merged.QueryHeadFirst));
        }

        return (output, lse);
    }

    /// <summary>
    /// Awaits one call per shard. At the first failure the others are stopped (<paramref name="stop"/>), and once all
    /// have ended what succeeded is undone (<paramref name="rollBack"/>), so a failed step leaves every shard as before
    /// it. Calls to a silo that dies fail as soon as Orleans' membership declares it dead, so a hung or lost silo
    /// never holds the step for longer than failure detection takes. A lost shard degrades the sequence; a refusal
    /// is passed on; anything else is a retryable <see cref="ServiceErrorCode.Unavailable"/> failure.
    /// </summary>
    private async Task<T[]> RunEverywhereAsync<T>(Task<T>[] calls, Func<Task> stop, Func<Task> rollBack, string what)
    {
        var pending = new List<Task>(calls);
        Exception? first = null;
        while (pending.Count > 0)
        {
            Task done = await Task.WhenAny(pending);
            pending.Remove(done);
            if (!done.IsCompletedSuccessfully && first is null)
            {
                first = done.Exception?.InnerException ?? new OperationCanceledException();
                await stop();
            }
        }

        if (first is null)
        {
            return [.. calls.Select(c => c.Result)];
        }

        await rollBack();

        Exception? lost = calls.Select(c => c.Exception?.InnerException).FirstOrDefault(e => e is not null && IsLost(e));
        if (lost is not null)
        {
            Degrade(Array.FindIndex(calls, c => c.Exception?.InnerException == lost), lost);
            throw ServiceException.Degraded($"sequence '{Id}' is degraded: {_problem}");
        }

        if (first is ServiceException { Code: not ServiceErrorCode.Unavailable })
        {
            throw first;
        }

        throw ServiceException.Unavailable($"{what} failed and was rolled back on every shard; it may be retried: {first.Message}", first);
    }

    private SequenceInfo Info(IReadOnlyList<ShardInfo> map) => new(
        Id,
        _model?.Spec ?? new SequenceSpec(),
        _problem is null ? _state : SequenceState.Degraded,
        _length,
        _keys.Length,
        map,
        _chunk is null || _state != SequenceState.Prefilling ? null : new ChunkProgress(_chunk.Index, _chunk.Start, _chunk.Tokens, _layersDone),
        _decodeLayersDone,
        _problem,
        silo.SiloAddress.ToParsableString());

    private void Degrade(int shard, Exception cause) =>
        _problem ??= $"shard {shard} lost its KV segments ({Describe(cause)}); the sequence refuses to answer rather than answer wrongly: delete it and prefill again";

    private SequenceModel Require()
    {
        if (_model is null)
        {
            // An activation made by asking for an unknown (or lost) sequence holds nothing: do not keep it.
            DeactivateOnIdle();
            throw ServiceException.NotFound(Id);
        }

        return _model;
    }

    private SequenceModel RequireHealthy()
    {
        SequenceModel model = Require();
        return _problem is null ? model : throw ServiceException.Degraded($"sequence '{Id}' is degraded: {_problem}");
    }

    private ISequenceShardGrain Shard(string key) => GrainFactory.GetGrain<ISequenceShardGrain>(key);

    /// <summary>Awaits every call; the first failure (after all ended) is rethrown, a lost shard degrading the sequence.</summary>
    private async Task Guard(IEnumerable<Task> calls)
    {
        Task[] all = [.. calls];
        try
        {
            await Task.WhenAll(all);
        }
        catch (Exception e) when (IsLost(e))
        {
            Degrade(Array.FindIndex(all, t => t.Exception?.InnerException is { } x && IsLost(x)), e);
            throw ServiceException.Degraded($"sequence '{Id}' is degraded: {_problem}");
        }
    }

    private static int[] Runs(ReadOnlySpan<long> offsets)
    {
        var runs = new List<int>();
        for (int i = 0; i < offsets.Length;)
        {
            int start = i;
            while (i + 1 < offsets.Length && offsets[i + 1] == offsets[i] + 1)
            {
                i++;
            }

            runs.Add((int)offsets[start]);
            runs.Add(i - start + 1);
            i++;
        }

        return [.. runs];
    }

    private static bool IsLost(Exception e) => e is ServiceException { Code: ServiceErrorCode.Degraded };

    private static bool IsUnreachable(Exception e) => e is SiloUnavailableException or OrleansMessageRejectionException or TimeoutException or IOException;

    private static string Describe(Exception e) => e.Message;

    private static async Task IgnoreFailure(Task task)
    {
        try
        {
            await task;
        }
        catch (Exception)
        {
            // Best effort: the shard may be gone, which is what is being cleaned up after.
        }
    }
}
