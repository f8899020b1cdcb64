using System.Diagnostics;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Grains.Memory;
using LongCluster.Grains.Placement;
using LongCluster.Grains.Telemetry;
using LongCluster.Grains.Status;

namespace LongCluster.Grains;

/// <summary>
/// The coordinator of one sequence. What is fixed from creation to deletion (spec, epoch, shard keys and silos, the
/// chunk history) is one <see cref="Placed"/> record; where the sequence stands is one <see cref="SequencePhase"/>
/// record, replaced whole in <see cref="Move"/> and only there, by non-reentrant calls one at a time; the
/// interleaved reads may run beside a long layer run and see the phase before or after it, never half of one.
/// Placed by Orleans' default and never collected while its silo lives (<see cref="KeepAliveAttribute"/>): its state
/// is the sequence.
/// </summary>
[KeepAlive]
internal sealed class CoordinatorGrain(SiloResources resources, IClusterMembershipService membership, ILocalSiloDetails silo, SiloApiEndpoint api, SiloMetrics metrics, RecentLayers recent)
    : Grain, ICoordinatorGrain
{
    private Placed? _placed;
    private SequencePhase _phase = new SequencePhase.Absent();
    private volatile string? _problem;

    private string Id => this.GetPrimaryKeyString();

    public async Task<SequenceInfo> CreateAsync(SequenceSpec spec, CancellationToken cancellationToken)
    {
        if (_placed is not null)
        {
            throw ServiceException.Conflict("id", $"sequence '{Id}' already exists");
        }

        // auto: every other field is checked as for a fixed layout, then the layout is chosen for the shard count.
        bool auto = SequenceModel.IsAuto(spec);
        SequenceModel model = SequenceModel.Of(auto ? spec with { Layout = ContextLayout.Zigzag.ToString() } : spec);
        int silos = membership.CurrentSnapshot.Members.Values.Count(m => m.Status == SiloStatus.Active);
        // A retrieval sequence has one shard; its evicted blocks go to one memory grain per silo and layer.
        int shards = model.Retrieval is not null ? 1 : spec.Shards > 0 ? spec.Shards : silos;
        int memoryParts = model.Retrieval is not null ? Math.Max(1, silos) : 0;
        LayoutChoice? choice = null;
        if (auto && shards >= 1 && model.Retrieval is null)
        {
            (model, choice) = model.ChooseLayout(shards, resources.CostProfile);
        }

        _ = model.Plan(shards, 0);
        string epoch = Guid.NewGuid().ToString("N")[..12];
        string[] keys = [.. Enumerable.Range(0, shards).Select(i => new ShardKey(Id, epoch, i, shards).ToString())];
        Task<ShardInfo>[] inits = [.. keys.Select((k, i) => Shard(k).InitAsync(new ShardSetup(Id, epoch, model.Spec with { Shards = shards }, i, shards, memoryParts), cancellationToken))];
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

        _placed = new Placed(model with { Spec = model.Spec with { Shards = shards } }, epoch, keys, [.. inits.Select(t => t.Result.Silo)], new ChunkHistory(model.Mask), choice, memoryParts);
        Move(new SequencePhase.Idle(0, 0, null));
        await GrainFactory.GetGrain<ISequenceDirectoryGrain>("all").AddAsync(Id, cancellationToken);
        return Info([.. inits.Select(t => t.Result)]);
    }

    public async Task<SequenceInfo> DescribeAsync(CancellationToken cancellationToken)
    {
        Placed placed = Require();
        var map = new ShardInfo[placed.Keys.Length];
        await Task.WhenAll(placed.Keys.Select(async (key, i) =>
        {
            try
            {
                map[i] = await Shard(key).DescribeAsync(placed.Epoch, cancellationToken);
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
        return Task.FromResult(_phase.LastChunk);
    }

    public Task<ShardAddress> ShardAsync(int index, CancellationToken cancellationToken)
    {
        Placed placed = Require();
        if (index < 0 || index >= placed.Keys.Length)
        {
            throw ServiceException.Invalid("shard", $"expected 0..{placed.Keys.Length - 1}, got {index}");
        }

        return Task.FromResult(new ShardAddress(placed.Keys[index], placed.Epoch, placed.Keys.Length, placed.Model.Spec.QueryHeads, placed.Model.Spec.HeadDim));
    }

    public async Task<ChunkPlan> BeginChunkAsync(ChunkRequest request, CancellationToken cancellationToken)
    {
        Placed placed = RequireHealthy();
        SequenceModel model = placed.Model;
        if (request is null || request.Tokens < 1)
        {
            throw ServiceException.Invalid("tokens", $"expected a chunk of at least 1 token, got {request?.Tokens ?? 0}");
        }

        if (_phase is SequencePhase.Prefilling inFlight)
        {
            throw ServiceException.Conflict("chunk", $"chunk {inFlight.Chunk.Index} is in flight ({inFlight.LayersDone} of {model.Spec.Layers} layers done); finish it first");
        }

        if (_phase is SequencePhase.Decoding decoding)
        {
            throw ServiceException.Conflict("chunk", $"a decode step is in flight ({decoding.LayersDone} of {model.Spec.Layers} layers done); finish it first");
        }

        long length = _phase.Length;
        if (length + request.Tokens > resources.Options.MaxTokensPerSequence)
        {
            throw ServiceException.Limit("tokens", $"the sequence holds {length} tokens; {request.Tokens} more would pass the limit of {resources.Options.MaxTokensPerSequence} (MaxTokensPerSequence)");
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

        long[] positions = [.. Enumerable.Range(0, request.Tokens).Select(i => length + i)];
        try
        {
            placed.History.EnsureCanAppend(positions, documents);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("tokens", e.Message);
        }

        string[] keys = placed.Keys;
        LayoutPlan plan = model.Plan(keys.Length, request.Tokens);
        int index = _phase.NextChunk;
        var rows = new ShardRows[keys.Length];
        var begins = new Task[keys.Length];
        for (int i = 0; i < keys.Length; i++)
        {
            ReadOnlySpan<long> offsets = plan.RankTokens(i);
            long[] shardPositions = new long[offsets.Length];
            int[] shardDocuments = documents.Length == 0 ? [] : new int[offsets.Length];
            for (int r = 0; r < offsets.Length; r++)
            {
                shardPositions[r] = length + offsets[r];
                if (shardDocuments.Length > 0)
                {
                    shardDocuments[r] = documents[offsets[r]];
                }
            }

            rows[i] = new ShardRows(i, "", offsets.Length, Runs(offsets));
            begins[i] = Shard(keys[i]).BeginChunkAsync(placed.Epoch, index, request.Tokens, shardPositions, shardDocuments, cancellationToken);
        }

        await Guard(begins);
        SequenceInfo info = await DescribeAsync(cancellationToken);
        var chunk = new ChunkPlan(Id, index, length, request.Tokens, [.. rows.Select(r => r with { Endpoint = info.ShardMap[r.Index].Endpoint })]);
        Move(new SequencePhase.Prefilling(length, index + 1, chunk, positions, documents, 0));
        return chunk;
    }

    public async Task<LayerRunResult> RunLayerAsync(int chunk, int layer, CancellationToken cancellationToken)
    {
        Placed placed = RequireHealthy();
        SequenceModel model = placed.Model;
        if (_phase is not SequencePhase.Prefilling prefilling || prefilling.Chunk.Index != chunk)
        {
            string now = _phase switch
            {
                SequencePhase.Prefilling p => $"the current chunk is {p.Chunk.Index}, {p.LayersDone} of {model.Spec.Layers} layers done",
                { LastChunk: { } last } => $"the last chunk, {last.Index}, is done",
                _ => "no chunk was started",
            };
            throw ServiceException.Conflict("chunk", $"chunk {chunk} is not in flight ({now})");
        }

        if (layer < 0 || layer >= model.Spec.Layers)
        {
            throw ServiceException.Invalid("layer", $"expected 0..{model.Spec.Layers - 1}, got {layer}");
        }

        if (layer != prefilling.LayersDone)
        {
            throw ServiceException.Conflict("layer", $"layers run in order: the next layer of chunk {chunk} is {prefilling.LayersDone}, not {layer}");
        }

        using Activity? activity = LongClusterTelemetry.StartSequenceActivity("coordinator run layer", Id, chunk, layer);
        long started = Stopwatch.GetTimestamp();
        var run = new ShardRun(placed.Epoch, chunk, layer, Guid.NewGuid(), placed.Keys, placed.Silos);
        ISequenceShardGrain[] shards = [.. placed.Keys.Select(Shard)];
        ShardTimings[] timings = await RunEverywhereAsync(
            shards.Select(s => s.RunLayerAsync(run, cancellationToken)).ToArray(),
            () => Task.WhenAll(shards.Select(s => IgnoreFailure(s.AbortRunAsync(run.Run, CancellationToken.None)))),
            () => Task.WhenAll(shards.Select(s => IgnoreFailure(s.RollBackRunAsync(run.Run, CancellationToken.None)))),
            $"layer {layer} of chunk {chunk}");
        // Every shard holds the layer's KV now: the layer is done, whatever happens to the clean-up below. Were a
        // failed commit to fail the call, the shards that did commit would have dropped the uploads a retry needs.
        if (prefilling.LayersDone + 1 < model.Spec.Layers)
        {
            Move(prefilling with { LayersDone = prefilling.LayersDone + 1 });
        }
        else
        {
            placed.History.Add(prefilling.Positions, prefilling.Documents);
            Move(new SequencePhase.Idle(prefilling.Length + prefilling.Chunk.Tokens, prefilling.NextChunk, prefilling.Chunk));
            LongClusterTelemetry.RecordPrefilled(metrics.Silo, model.Spec.Layout, prefilling.Chunk.Tokens);
        }

        try
        {
            await Guard(shards.Select(s => s.CommitLayerAsync(placed.Epoch, chunk, layer, cancellationToken)));
        }
        catch (Exception e) when (IsUnreachable(e))
        {
            // A shard that cannot be told keeps its uploads until the next chunk; if its silo died, the next call
            // that needs it finds the sequence degraded.
        }

        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        LongClusterTelemetry.RecordLayerRun(metrics.Silo, model.Spec.Layout, seconds);
        recent.Add(Id, chunk, layer, seconds, timings);
        return new LayerRunResult(chunk, layer, seconds, timings, Info([]));
    }

    public async Task<DecodeResult> DecodeAsync(int layer, TensorRows query, TensorRows key, TensorRows value, int document, CancellationToken cancellationToken)
    {
        Placed placed = RequireHealthy();
        SequenceModel model = placed.Model;
        SequenceSpec spec = model.Spec;
        if (_phase is SequencePhase.Prefilling inFlight)
        {
            throw ServiceException.Conflict("layer", $"chunk {inFlight.Chunk.Index} is in flight; finish its layers before decoding");
        }

        int layersDone = _phase is SequencePhase.Decoding decoding ? decoding.LayersDone : 0;
        long length = _phase.Length;

        if (layer < 0 || layer >= spec.Layers)
        {
            throw ServiceException.Invalid("layer", $"expected 0..{spec.Layers - 1}, got {layer}");
        }

        if (layer != layersDone)
        {
            throw ServiceException.Conflict("layer", $"decode runs the layers in order: the next layer of token {length} is {layersDone}, not {layer}");
        }

        model.CheckRows(query, "q", 1, spec.QueryHeads);
        model.CheckRows(key, "k", 1, spec.KeyValueHeads);
        model.CheckRows(value, "v", 1, spec.KeyValueHeads);
        if (length + 1 > resources.Options.MaxTokensPerSequence)
        {
            throw ServiceException.Limit("tokens", $"the sequence holds {length} tokens, its limit (MaxTokensPerSequence)");
        }

        long position = length;
        int[] documents = model.Mask.Document ? [document] : [];
        try
        {
            placed.History.EnsureCanAppend([position], documents);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("q", e.Message);
        }

        using Activity? activity = LongClusterTelemetry.StartSequenceActivity("coordinator decode", Id, null, layer);
        long started = Stopwatch.GetTimestamp();
        LayoutPlan plan = model.Plan(placed.Keys.Length, 0);
        int ownerRing = (int)(position % plan.RingDegree);
        ISequenceShardGrain[] shards = [.. placed.Keys.Select(Shard)];
        bool[] owners = [.. Enumerable.Range(0, shards.Length).Select(i => plan.RingOf(i) == ownerRing)];
        DecodePartial[] partials = await RunEverywhereAsync(
            shards.Select((s, i) => s.DecodeAsync(new ShardDecode(placed.Epoch, layer, position, document, owners[i], query, key, value), cancellationToken)).ToArray(),
            () => Task.CompletedTask,
            () => Task.WhenAll(shards.Where((_, i) => owners[i]).Select(s => IgnoreFailure(s.UndoDecodeAsync(placed.Epoch, layer, position, CancellationToken.None)))),
            $"decode of token {position}, layer {layer}");

        (float[] output, float[] lse) = Merge(partials, spec.QueryHeads, spec.HeadDim);
        if (layersDone + 1 < spec.Layers)
        {
            Move(new SequencePhase.Decoding(length, _phase.NextChunk, _phase.LastChunk, layersDone + 1));
        }
        else
        {
            placed.History.Add([position], documents);
            Move(new SequencePhase.Idle(length + 1, _phase.NextChunk, _phase.LastChunk));
        }

        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        LongClusterTelemetry.RecordDecode(metrics.Silo, spec.Layout, seconds, lastLayer: layersDone + 1 == spec.Layers);
        return new DecodeResult(position, layer, output, lse, seconds);
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        metrics.Forget(Id);
        return Task.CompletedTask;
    }

    public Task<bool> HoldsAsync(string epoch, CancellationToken cancellationToken)
    {
        if (_placed is not { } placed)
        {
            DeactivateOnIdle();
            return Task.FromResult(false);
        }

        return Task.FromResult(placed.Epoch == epoch);
    }

    public async Task DeleteAsync(CancellationToken cancellationToken)
    {
        Placed placed = Require();
        await Task.WhenAll(placed.Keys.Select(k => IgnoreFailure(Shard(k).DeleteAsync(placed.Epoch, cancellationToken))));
        // A retrieval sequence's evicted blocks, whether or not its shard survived.
        await Task.WhenAll(
            from layer in Enumerable.Range(0, placed.MemoryParts == 0 ? 0 : placed.Model.Spec.Layers)
            from part in Enumerable.Range(0, placed.MemoryParts)
            select IgnoreFailure(GrainFactory.GetGrain<IMemoryGrain>(MemoryGrain.Key(Id, placed.Epoch, layer, part, placed.MemoryParts)).DeleteAsync(placed.Epoch, cancellationToken)));
        await GrainFactory.GetGrain<ISequenceDirectoryGrain>("all").RemoveAsync(Id, cancellationToken);
        _placed = null;
        _problem = null;
        Move(new SequencePhase.Deleted());
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

        throw ServiceException.Unavailable($"{what} failed and was rolled back on every shard; it may be retried: {first.Message}");
    }

    private SequenceInfo Info(IReadOnlyList<ShardInfo> map)
    {
        SequencePhase phase = _phase;
        return new(
            Id,
            _placed?.Model.Spec ?? new SequenceSpec(),
            _problem is null ? phase.State : SequenceState.Degraded,
            phase.Length,
            _placed?.Keys.Length ?? 0,
            map,
            phase is SequencePhase.Prefilling p ? new ChunkProgress(p.Chunk.Index, p.Chunk.Start, p.Chunk.Tokens, p.LayersDone) : null,
            phase is SequencePhase.Decoding d ? d.LayersDone : 0,
            _problem,
            silo.SiloAddress.ToParsableString(),
            api.Url,
            _placed?.Auto?.Layout.ToString(),
            _placed?.Auto is { } auto ? Math.Round(auto.Prediction.LayerMs, 3) : null);
    }

    /// <summary>The one place the phase changes. A move the life cycle does not have is a bug here, not a client's error.</summary>
    private void Move(SequencePhase next)
    {
        if (!SequencePhase.CanMove(_phase, next))
        {
            throw new InvalidOperationException($"coordinator of '{Id}': the life cycle has no move from {_phase.GetType().Name} to {next.GetType().Name}");
        }

        _phase = next;
        metrics.Track(Id, _problem is null || next.State == SequenceState.Deleted ? next.State : SequenceState.Degraded);
    }

    private void Degrade(int shard, Exception cause)
    {
        _problem ??= $"shard {shard} lost its KV segments ({Describe(cause)}); the sequence refuses to answer rather than answer wrongly: delete it and prefill again";
        if (_placed is not null && _phase is not SequencePhase.Deleted)
        {
            metrics.Track(Id, SequenceState.Degraded);
        }
    }

    private Placed Require()
    {
        if (_placed is not { } placed)
        {
            // An activation made by asking for an unknown (or lost) sequence holds nothing: do not keep it.
            DeactivateOnIdle();
            throw ServiceException.NotFound(Id);
        }

        return placed;
    }

    private Placed RequireHealthy()
    {
        Placed placed = Require();
        return _problem is null ? placed : throw ServiceException.Degraded($"sequence '{Id}' is degraded: {_problem}");
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

    /// <summary>
    /// What is fixed from a sequence's creation to its deletion: the validated spec, the incarnation, where its shards
    /// are, the history of its chunks, for <c>layout: auto</c>, the choice made, and for the retrieval mask, the memory
    /// grains per layer (0 for other masks).
    /// </summary>
    private sealed record Placed(SequenceModel Model, string Epoch, string[] Keys, string[] Silos, ChunkHistory History, LayoutChoice? Auto, int MemoryParts);
}
