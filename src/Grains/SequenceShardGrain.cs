using System.Diagnostics;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Grains.Exchange;
using LongCluster.Grains.Memory;
using LongCluster.Grains.Placement;
using LongCluster.Grains.Telemetry;
using LongCluster.Tensors;

namespace LongCluster.Grains;

/// <summary>
/// One shard of one sequence. Calls run one at a time (the runtime's turn guarantee), except
/// <see cref="DescribeAsync"/> (reads counters, and asks a retrieval sequence's memory grains for their block counts) and <see cref="AbortRunAsync"/> (touches only the
/// <see cref="_runLock"/>-guarded run state and the exchange) and <see cref="DeliverAsync"/> (hands a frame to the
/// silo's mailboxes). The KV segments live only here: an activation created after its silo failed has no setup and
/// answers every call with a <see cref="ServiceErrorCode.Degraded"/> refusal. Orleans never collects a shard
/// (<see cref="KeepAliveAttribute"/>); instead a timer asks its coordinator every
/// <see cref="AttentionServiceOptions.OrphanCheckInterval"/> whether it still holds the sequence, and a shard whose
/// coordinator lost it (its silo failed), or one that holds nothing, deactivates, freeing its memory.
/// </summary>
[SpreadPlacement]
[KeepAlive]
internal sealed class SequenceShardGrain(SiloResources resources, IRunExchangeFactory exchanges, ExchangeHub hub, ILocalSiloDetails silo, SiloApiEndpoint api, SiloMetrics metrics)
    : Grain, ISequenceShardGrain
{
    private readonly Lock _runLock = new();
    private readonly Dictionary<int, (byte[] Query, byte[] Key, byte[] Value)> _uploads = [];
    private readonly Dictionary<int, ShardOutput> _outputs = [];
    private readonly HashSet<Guid> _aborted = [];
    private readonly Dictionary<int, (long Position, int Segments)> _decodeAppends = [];
    private ShardSetup? _setup;
    private SequenceModel _model = null!;
    private LayoutPlan _heads = null!;
    private IShardStore[] _layers = [];
    private IRetrievalLayer[] _retrieval = [];
    private int _chunk = -1;
    private int _chunkTokens;
    private long[] _positions = [];
    private int[] _documents = [];
    private long _reserved;
    private (Guid Run, CancellationTokenSource Cancel)? _active;
    private (Guid Run, int Layer, int Segments)? _finished;

    public Task<ShardInfo> InitAsync(ShardSetup setup, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(setup);
        if (_setup is not null)
        {
            if (_setup.Epoch == setup.Epoch)
            {
                return Task.FromResult(Info());
            }

            throw ServiceException.Conflict("id", $"shard {setup.Index} of '{setup.SequenceId}' belongs to another incarnation of that id");
        }

        SequenceModel model = SequenceModel.Of(setup.Spec);
        resources.AddSequence(setup.SequenceId);
        _model = model;
        _heads = model.Plan(setup.Shards, 0);
        if (model.Retrieval is { } rule)
        {
            SequenceSpec spec = model.Spec;
            var shape = new MemoryShape(spec.DType, rule.Block, spec.QueryHeads, spec.KeyValueHeads, spec.HeadDim);
            int parts = Math.Max(1, setup.MemoryParts);
            _retrieval = [.. Enumerable.Range(0, spec.Layers).Select(layer => IRetrievalLayer.Create(
                model.DType, rule, shape, setup.SequenceId, setup.Epoch,
                [.. Enumerable.Range(0, parts).Select(part => GrainFactory.GetGrain<IMemoryGrain>(MemoryGrain.Key(setup.SequenceId, setup.Epoch, layer, part, parts)))]))];
        }
        else
        {
            _layers = [.. Enumerable.Range(0, model.Spec.Layers).Select(_ => IShardStore.Create(model.DType, setup.Index, model.Spec.HeadDim, resources.Options.ReceiveTimeout, resources.Backend))];
        }

        _setup = setup;
        return Task.FromResult(Info());
    }

    public async Task<ShardInfo> DescribeAsync(string epoch, CancellationToken cancellationToken)
    {
        Check(epoch);
        // A retrieval sequence's evicted blocks live in memory grains: one that lost them degrades the sequence now,
        // not at the next step that would need them.
        for (int layer = 0; layer < _retrieval.Length; layer++)
        {
            if (await _retrieval[layer].MissingAsync(cancellationToken) is { } missing)
            {
                throw ServiceException.Degraded($"layer {layer}: {missing}");
            }
        }

        return Info();
    }

    public Task BeginChunkAsync(string epoch, int chunk, int tokens, long[] positions, int[] documents, CancellationToken cancellationToken)
    {
        Check(epoch);
        if (_active is not null)
        {
            throw ServiceException.Conflict("chunk", "a layer is running on this shard");
        }

        _uploads.Clear();
        _outputs.Clear();
        _decodeAppends.Clear();
        _finished = null;
        _chunk = chunk;
        _chunkTokens = tokens;
        _positions = positions;
        _documents = documents;
        Account();
        return Task.CompletedTask;
    }

    public Task UploadAsync(string epoch, int chunk, int layer, TensorRows query, TensorRows key, TensorRows value, CancellationToken cancellationToken)
    {
        Check(epoch);
        CheckChunk(chunk, layer);
        int rows = _positions.Length;
        _model.CheckRows(query, "q", rows, _model.Spec.QueryHeads);
        _model.CheckRows(key, "k", rows, _model.Spec.KeyValueHeads);
        _model.CheckRows(value, "v", rows, _model.Spec.KeyValueHeads);
        long previous = _uploads.TryGetValue(layer, out var old) ? Bytes(old) : 0;
        long added = query.Data.LongLength + key.Data.LongLength + value.Data.LongLength + OutputBytes(rows) - previous;
        resources.ReserveBytes(added, "q");
        _reserved += added;
        _uploads[layer] = (query.Data, key.Data, value.Data);
        Account();
        return Task.CompletedTask;
    }

    public async Task<ShardTimings> RunLayerAsync(ShardRun run, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(run);
        Check(run.Epoch);
        CheckChunk(run.Chunk, run.Layer);
        if (!_uploads.TryGetValue(run.Layer, out var input))
        {
            throw ServiceException.Conflict("layer", $"shard {_setup!.Index} has no rows for layer {run.Layer} of chunk {run.Chunk}: upload them first");
        }

        if (run.Keys.Length != _setup!.Shards || run.Silos.Length != run.Keys.Length || run.Silos[_setup.Index] != Silo || run.Keys[_setup.Index] != this.GetPrimaryKeyString())
        {
            throw ServiceException.Unavailable($"shard {_setup.Index} is on {Silo}, not where the run expects it ({run.Silos.ElementAtOrDefault(_setup.Index)}); membership changed");
        }

        using Activity? activity = LongClusterTelemetry.StartSequenceActivity("shard run layer", _setup.SequenceId, run.Chunk, run.Layer, _setup.Index);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        lock (_runLock)
        {
            if (_aborted.Contains(run.Run))
            {
                throw ServiceException.Unavailable($"run {run.Run} was aborted before shard {_setup.Index} started it");
            }

            _active = (run.Run, cancel);
        }

        if (_retrieval.Length > 0)
        {
            return await RunRetrievalAsync(run, input, activity, cancel.Token);
        }

        IShardStore store = _layers[run.Layer];
        int segments = store.SegmentCount;
        LayoutPlan plan = _model.Plan(_setup.Shards, _chunkTokens);
        int onThisSilo = run.Silos.Count(r => r == Silo);
        int threads = resources.Options.KernelThreads > 0 ? resources.Options.KernelThreads : Math.Max(1, Environment.ProcessorCount / onThisSilo);
        IRunExchange exchange = exchanges.Open(run.Run, _setup.Index, run.Keys, run.Silos);
        int rows = _positions.Length;
        int heads = _model.Spec.QueryHeads;
        // The rank writes its O and LSE rows straight into the bytes the shard keeps for the client (no copy after).
        byte[] output = new byte[(long)rows * heads * _model.Spec.HeadDim * sizeof(float)];
        byte[] lse = new byte[(long)rows * heads * sizeof(float)];
        try
        {
            RankTimings t = await store.PrefillAsync(
                exchange, plan, input.Query, input.Key, input.Value, _positions, _documents, ByteMemory<float>.Of(output), ByteMemory<float>.Of(lse),
                _model.Mask, AttentionOptions.Default with { MaxThreads = threads }, cancel.Token);
            await exchange.CompleteAsync(cancel.Token);
            _outputs[run.Layer] = new ShardOutput(rows, output, lse);
            lock (_runLock)
            {
                _finished = (run.Run, run.Layer, segments);
            }

            var timings = new ShardTimings(
                _setup.Index, t.Scatter.TotalSeconds, t.Compute.TotalSeconds, t.Waiting.TotalSeconds, t.Gather.TotalSeconds, exchange.TransferTime.TotalSeconds, exchange.BytesSent);
            LongClusterTelemetry.RecordLayer(metrics.Silo, _model.Spec.Layout, timings);
            return timings;
        }
        catch (Exception e)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            store.Truncate(segments);
            _outputs.Remove(run.Layer);
            throw e is ServiceException ? e : ServiceException.Unavailable($"shard {_setup.Index}, layer {run.Layer}: {e.Message}");
        }
        finally
        {
            lock (_runLock)
            {
                _active = null;
            }

            await exchange.DisposeAsync();
            exchanges.Close(run.Run, _setup.Index);
            Account();
        }
    }

    public Task AbortRunAsync(Guid run, CancellationToken cancellationToken)
    {
        // Reentrant: it may run beside any call, so it touches only the run-state fields under the lock and the hub.
        lock (_runLock)
        {
            _aborted.Add(run);
            if (_active is { } active && active.Run == run)
            {
                active.Cancel.Cancel();
            }
        }

        if (_setup is { } setup)
        {
            exchanges.Close(run, setup.Index);
        }

        return Task.CompletedTask;
    }

    public Task DeliverAsync(Guid run, int source, RingBlock block, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(block);
        if (Volatile.Read(ref _setup) is not { } setup)
        {
            // A fresh activation (its silo failed): no run of this shard is waiting here.
            block.Frame.Dispose();
            return Task.CompletedTask;
        }

        if (source < 0 || source >= setup.Shards)
        {
            block.Frame.Dispose();
            throw ServiceException.Invalid("source", $"expected a rank in 0..{setup.Shards - 1}, got {source}");
        }

        hub.Deliver(run, setup.Index, source, block.Frame);
        return Task.CompletedTask;
    }

    public Task RollBackRunAsync(Guid run, CancellationToken cancellationToken)
    {
        lock (_runLock)
        {
            if (_finished is not { } done || done.Run != run)
            {
                return Task.CompletedTask;
            }

            _finished = null;
            if (_retrieval.Length > 0)
            {
                _retrieval[done.Layer].Restore();
            }
            else
            {
                _layers[done.Layer].Truncate(done.Segments);
            }

            _outputs.Remove(done.Layer);
        }

        Account();
        return Task.CompletedTask;
    }

    public Task CommitLayerAsync(string epoch, int chunk, int layer, CancellationToken cancellationToken)
    {
        Check(epoch);
        if (chunk == _chunk && _uploads.Remove(layer))
        {
            lock (_runLock)
            {
                _finished = null;
                _aborted.Clear();
            }
        }

        Account();
        return Task.CompletedTask;
    }

    public Task<ShardOutput> ReadOutputAsync(string epoch, int chunk, int layer, CancellationToken cancellationToken)
    {
        Check(epoch);
        CheckChunk(chunk, layer);
        return _outputs.TryGetValue(layer, out ShardOutput? output)
            ? Task.FromResult(output)
            : throw ServiceException.Conflict("layer", $"layer {layer} of chunk {chunk} has not run yet");
    }

    public Task<DecodePartial> DecodeAsync(ShardDecode step, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(step);
        Check(step.Epoch);
        CheckLayer(step.Layer);
        SequenceSpec spec = _model.Spec;
        _model.CheckRows(step.Query, "q", 1, spec.QueryHeads);
        _model.CheckRows(step.Key, "k", 1, spec.KeyValueHeads);
        _model.CheckRows(step.Value, "v", 1, spec.KeyValueHeads);
        if (_retrieval.Length > 0)
        {
            return DecodeRetrievalAsync(step, cancellationToken);
        }

        int member = _heads.MemberOf(_setup!.Index);
        (int qFirst, int qCount) = _heads.QueryHeadsOf(member);
        (int kvFirst, int kvCount) = _heads.KeyValueHeadsOf(member);
        int d = spec.HeadDim;
        int size = _model.DType.Size();
        int[] documents = _model.Mask.Document ? [step.Document] : [];
        IShardStore store = _layers[step.Layer];
        if (step.Append)
        {
            long bytes = 2L * kvCount * d * size;
            resources.ReserveBytes(bytes, "k");
            _reserved += bytes;
            int undo = store.Append([step.Position], documents, step.Key.Data.AsSpan(kvFirst * d * size, kvCount * d * size).ToArray(), step.Value.Data.AsSpan(kvFirst * d * size, kvCount * d * size).ToArray());
            _decodeAppends[step.Layer] = (step.Position, undo);
        }

        var output = new float[qCount * d];
        var lse = new float[qCount];
        // One query row: a thread per 2^20 key-head-dims at most, so a short segment is not spread over cores for
        // less work than it costs to hand it out (the shards of a sequence decode at once on shared cores).
        int threads = (int)Math.Clamp(store.StoredRows * kvCount * d >> 20, 1, Environment.ProcessorCount);
        store.Attend(step.Query.Data.AsSpan(qFirst * d * size, qCount * d * size).ToArray(), [step.Position], documents, qCount, kvCount, _model.Mask, AttentionOptions.Default with { MaxThreads = threads }, output, lse);
        Account();
        return Task.FromResult(new DecodePartial(qFirst, qCount, output, lse));
    }

    public Task UndoDecodeAsync(string epoch, int layer, long position, CancellationToken cancellationToken)
    {
        Check(epoch);
        CheckLayer(layer);
        if (_decodeAppends.Remove(layer, out var appended) && appended.Position == position)
        {
            if (_retrieval.Length > 0)
            {
                _retrieval[layer].Restore();
            }
            else
            {
                _layers[layer].Truncate(appended.Segments);
            }
        }

        Account();
        return Task.CompletedTask;
    }

    public Task DeleteAsync(string epoch, CancellationToken cancellationToken)
    {
        if (_setup is null || _setup.Epoch != epoch)
        {
            // Nothing of this incarnation lives here (a fresh activation after a failure): nothing to free.
            DeactivateOnIdle();
            return Task.CompletedTask;
        }

        Free();
        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    public Task LoadRetrievalAsync(string epoch, RetrievalHistory history, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(history);
        Check(epoch);
        if (_retrieval.Length == 0)
        {
            throw ServiceException.Invalid("mask", $"sequence '{_setup!.SequenceId}' is not a retrieval sequence");
        }

        CheckLayer(history.Layer);
        if (_retrieval[history.Layer].Length != 0)
        {
            throw ServiceException.Conflict("layer", $"layer {history.Layer} already holds {_retrieval[history.Layer].Length} tokens");
        }

        try
        {
            _retrieval[history.Layer].Load(history);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("history", e.Message);
        }

        Account();
        return Task.CompletedTask;
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        Orphans.Watch(this, resources.Options.OrphanCheckInterval, CheckHeldAsync);
        return Task.CompletedTask;
    }

    /// <summary>Deactivates a shard that holds nothing, or whose coordinator no longer holds its sequence.</summary>
    private async Task CheckHeldAsync(CancellationToken cancellationToken)
    {
        ShardSetup? setup = Volatile.Read(ref _setup);
        bool held = await Orphans.IsHeldAsync(GrainFactory, setup?.SequenceId, setup?.Epoch, cancellationToken);
        bool running;
        lock (_runLock)
        {
            running = _active is not null;
        }

        if (!held && !running)
        {
            DeactivateOnIdle();
        }
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        Free();
        return Task.CompletedTask;
    }

    private void Free()
    {
        if (_setup is { } setup)
        {
            resources.RemoveSequence(setup.SequenceId);
        }

        _uploads.Clear();
        _outputs.Clear();
        foreach (IShardStore layer in _layers)
        {
            layer.Dispose();
        }

        _layers = [];
        _retrieval = [];
        _setup = null;
        resources.ReleaseBytes(_reserved);
        _reserved = 0;
    }

    private ShardInfo Info() => new(
        _setup!.Index, api.Url, Silo, _retrieval.Length > 0 ? _retrieval[0].StoredRows : _layers.Length == 0 ? 0 : _layers[0].StoredRows, Volatile.Read(ref _reserved));

    private void Check(string epoch)
    {
        if (_setup is null)
        {
            throw ServiceException.Degraded($"shard {this.GetPrimaryKeyString()} holds no data: the silo that held its KV segments failed or it was moved, so the sequence is degraded");
        }

        if (_setup.Epoch != epoch)
        {
            throw ServiceException.Conflict("id", $"shard {_setup.Index} of '{_setup.SequenceId}' belongs to another incarnation of that id");
        }
    }

    private void CheckLayer(int layer)
    {
        int layers = Math.Max(_layers.Length, _retrieval.Length);
        if (layer < 0 || layer >= layers)
        {
            throw ServiceException.Invalid("layer", $"expected 0..{layers - 1}, got {layer}");
        }
    }

    private void CheckChunk(int chunk, int layer)
    {
        CheckLayer(layer);
        if (chunk != _chunk)
        {
            throw ServiceException.Conflict("chunk", $"chunk {chunk} is not the chunk in flight ({(_chunk < 0 ? "none" : _chunk)})");
        }
    }

    /// <summary>Makes the silo's reservation equal what this shard holds now.</summary>
    private void Account()
    {
        long held = _uploads.Values.Sum(Bytes)
            + (_uploads.Count * OutputBytes(_positions.Length))
            + _outputs.Values.Sum(o => (long)o.Output.Length + o.LogSumExp.Length)
            + _layers.Sum(l => l.StoredBytes)
            + _retrieval.Sum(l => l.StoredBytes);
        // Rows already computed are accounted for even past the budget: uploads were checked against it.
        resources.Adjust(held - _reserved);
        _reserved = held;
    }

    /// <summary>
    /// One layer of the chunk in flight for a retrieval sequence: the shard's rows (one request) go through the rule
    /// chunk by chunk, with the layer's memory grains; a failure restores the layer as it was before the call.
    /// </summary>
    private async Task<ShardTimings> RunRetrievalAsync(ShardRun run, (byte[] Query, byte[] Key, byte[] Value) input, Activity? activity, CancellationToken cancellationToken)
    {
        IRetrievalLayer layer = _retrieval[run.Layer];
        int rows = _positions.Length;
        int heads = _model.Spec.QueryHeads;
        long started = Stopwatch.GetTimestamp();
        byte[] output = new byte[(long)rows * heads * _model.Spec.HeadDim * sizeof(float)];
        byte[] lse = new byte[(long)rows * heads * sizeof(float)];
        try
        {
            if (rows > 0 && _positions[0] != layer.Length)
            {
                throw ServiceException.Conflict("chunk", $"layer {run.Layer} holds {layer.Length} tokens; the chunk starts at {_positions[0]}");
            }

            layer.Checkpoint();
            await layer.RunAsync(input.Query, input.Key, input.Value, rows, ByteMemory<float>.Of(output), ByteMemory<float>.Of(lse), KernelOptions(), cancellationToken);
            _outputs[run.Layer] = new ShardOutput(rows, output, lse);
            lock (_runLock)
            {
                _finished = (run.Run, run.Layer, 0);
            }

            var timings = new ShardTimings(_setup!.Index, 0, Stopwatch.GetElapsedTime(started).TotalSeconds, 0, 0, 0, 0);
            LongClusterTelemetry.RecordLayer(metrics.Silo, _model.Spec.Layout, timings);
            return timings;
        }
        catch (Exception e)
        {
            activity?.SetStatus(ActivityStatusCode.Error, e.Message);
            layer.Restore();
            _outputs.Remove(run.Layer);
            throw e is ServiceException ? e : ServiceException.Unavailable($"shard {_setup!.Index}, layer {run.Layer}: {e.Message}");
        }
        finally
        {
            lock (_runLock)
            {
                _active = null;
            }

            Account();
        }
    }

    /// <summary>A decode step of a retrieval sequence: a request of one row through the rule (the one shard owns every position).</summary>
    private async Task<DecodePartial> DecodeRetrievalAsync(ShardDecode step, CancellationToken cancellationToken)
    {
        IRetrievalLayer layer = _retrieval[step.Layer];
        if (step.Position != layer.Length)
        {
            throw ServiceException.Conflict("q", $"layer {step.Layer} holds {layer.Length} tokens; the decode step is at position {step.Position}");
        }

        int heads = _model.Spec.QueryHeads;
        var output = new float[heads * _model.Spec.HeadDim];
        var lse = new float[heads];
        layer.Checkpoint();
        try
        {
            await layer.RunAsync(step.Query.Data, step.Key.Data, step.Value.Data, 1, output, lse, KernelOptions(), cancellationToken);
            _decodeAppends[step.Layer] = (step.Position, 0);
        }
        catch (Exception e)
        {
            layer.Restore();
            throw e is ServiceException ? e : ServiceException.Unavailable($"shard {_setup!.Index}, decode layer {step.Layer}: {e.Message}");
        }
        finally
        {
            Account();
        }

        return new DecodePartial(0, heads, output, lse);
    }

    private AttentionOptions KernelOptions() =>
        AttentionOptions.Default with { MaxThreads = resources.Options.KernelThreads > 0 ? resources.Options.KernelThreads : Environment.ProcessorCount };

    private string Silo => silo.SiloAddress.ToParsableString();

    private long OutputBytes(int rows) => (long)rows * _model.Spec.QueryHeads * (_model.Spec.HeadDim + 1) * 4;

    private static long Bytes((byte[] Query, byte[] Key, byte[] Value) rows) => rows.Query.LongLength + rows.Key.LongLength + rows.Value.LongLength;
}
