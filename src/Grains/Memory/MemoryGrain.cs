using System.Runtime.InteropServices;
using LongCluster.Grains.Placement;
using LongCluster.Kernels;
using LongCluster.Tensors;

namespace LongCluster.Grains.Memory;

/// <summary>
/// Holds part of one layer's evicted blocks in its silo's <see cref="MemoryTier"/>. Never collected by Orleans
/// (<see cref="KeepAliveAttribute"/>); like a shard, a timer asks the sequence's coordinator whether it still holds the
/// incarnation, and an orphan deactivates, freeing its blocks and files.
/// </summary>
[SpreadPlacement]
[KeepAlive]
internal sealed class MemoryGrain(MemoryTier tier, SiloResources resources) : Grain, IMemoryGrain
{
    private readonly SortedDictionary<int, (MemoryBlock Data, float[] KeySum)> _blocks = [];
    private string? _sequence;
    private string? _epoch;
    private MemoryShape? _shape;
    private DType _dtype;
    private (int Count, float[] Sums) _packed = (0, []);

    /// <summary>The grain key of part <paramref name="part"/> of <paramref name="parts"/> of layer <paramref name="layer"/>'s memory.</summary>
    public static string Key(string sequence, string epoch, int layer, int part, int parts) =>
        new ShardKey($"{sequence}/memory/{layer}", epoch, part, parts).ToString();

    public Task StoreAsync(MemoryStore blocks, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (_epoch is not null && _epoch != blocks.Epoch)
        {
            throw ServiceException.Conflict("id", $"memory {this.GetPrimaryKeyString()} belongs to another incarnation of that sequence");
        }

        MemoryShape shape = blocks.Shape;
        if (_shape is not null && _shape != shape)
        {
            throw ServiceException.Invalid("shape", $"memory {this.GetPrimaryKeyString()} holds blocks of {_shape}, not {shape}");
        }

        if (!DTypes.TryParseFloat(shape.DType, out DType dtype))
        {
            throw ServiceException.Invalid("dtype", $"expected f32, f16 or bf16, got '{shape.DType}'");
        }

        int blockBytes = shape.Block * shape.KeyValueHeads * shape.HeadDim * dtype.Size();
        int sums = shape.KeyValueHeads * shape.HeadDim;
        int n = blocks.Blocks.Length;
        if (blocks.Keys.LongLength != (long)n * blockBytes || blocks.Values.LongLength != (long)n * blockBytes || blocks.KeySums.LongLength != (long)n * sums)
        {
            throw ServiceException.Invalid(
                "blocks", $"{n} blocks of {shape} take {n * (long)blockBytes} bytes of K and of V and {n * (long)sums} key sums; got {blocks.Keys.Length}, {blocks.Values.Length} and {blocks.KeySums.Length}");
        }

        _sequence = blocks.SequenceId;
        _epoch = blocks.Epoch;
        _shape = shape;
        _dtype = dtype;
        for (int i = 0; i < n; i++)
        {
            MemoryBlock data = tier.Keep(blocks.Keys.AsSpan(i * blockBytes, blockBytes), blocks.Values.AsSpan(i * blockBytes, blockBytes), (long)sums * sizeof(float));
            if (_blocks.Remove(blocks.Blocks[i], out var old))
            {
                old.Data.Dispose();
            }

            _blocks[blocks.Blocks[i]] = (data, blocks.KeySums.AsSpan(i * sums, sums).ToArray());
        }

        _packed = (0, []);
        return Task.CompletedTask;
    }

    public Task<MemoryCandidates> ScoreAsync(MemoryScore request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        MemoryShape shape = Require(request.Epoch, request.Evicted, request.Held);
        int hkv = shape.KeyValueHeads;
        int d = shape.HeadDim;
        if (request.QuerySum.Length != hkv * d || request.TopK < 1)
        {
            throw ServiceException.Invalid("querySum", $"expected a query sum of Hkv · d = {hkv * d} values and topk >= 1, got {request.QuerySum.Length} and {request.TopK}");
        }

        float[] sums = Packed(request.Held);
        var scores = new float[hkv * request.Held];
        RetrievalAttention.ScoreBlocks(request.QuerySum, sums.AsSpan(0, request.Held * hkv * d), hkv, d, scores);
        int[] ids = [.. _blocks.Keys.Take(request.Held)];
        int perHead = Math.Min(request.TopK, request.Held);
        var blocks = new int[hkv * perHead];
        var best = new float[hkv * perHead];
        var chosen = new int[perHead];
        for (int g = 0; g < hkv && perHead > 0; g++)
        {
            ReadOnlySpan<float> head = scores.AsSpan(g * request.Held, request.Held);
            RetrievalAttention.SelectTop(head, perHead, chosen);
            for (int i = 0; i < perHead; i++)
            {
                blocks[(g * perHead) + i] = ids[chosen[i]];
                best[(g * perHead) + i] = head[chosen[i]];
            }
        }

        return Task.FromResult(new MemoryCandidates(perHead, blocks, best));
    }

    public Task<MemoryPartial> AttendAsync(MemoryAttend request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        MemoryShape shape = Require(request.Epoch, request.Evicted, request.Held);
        if (request.Chosen.Length != shape.KeyValueHeads)
        {
            throw ServiceException.Invalid("chosen", $"expected the chosen blocks of each of {shape.KeyValueHeads} KV heads, got {request.Chosen.Length} lists");
        }

        foreach (int block in request.Chosen.SelectMany(c => c))
        {
            if (block >= request.Evicted || !_blocks.ContainsKey(block))
            {
                throw ServiceException.Invalid("chosen", $"block {block} is not among the evicted blocks held by memory {this.GetPrimaryKeyString()}");
            }
        }

        long elements = (long)request.Rows * shape.QueryHeads * shape.HeadDim;
        if (request.Rows < 1 || request.Query.LongLength != elements * _dtype.Size())
        {
            throw ServiceException.Invalid("q", $"expected {request.Rows} query rows of {shape.QueryHeads} × {shape.HeadDim} {shape.DType} ({elements * _dtype.Size()} bytes), got {request.Query.Length} bytes");
        }

        var output = new float[elements];
        var lse = new float[request.Rows * shape.QueryHeads];
        switch (_dtype)
        {
            case DType.F32:
                Attend<float>(shape, request, output, lse);
                break;
            case DType.F16:
                Attend<Half>(shape, request, output, lse);
                break;
            default:
                Attend<BFloat16>(shape, request, output, lse);
                break;
        }

        return Task.FromResult(new MemoryPartial(output, lse));
    }

    public Task<MemoryHolding> DescribeAsync(CancellationToken cancellationToken)
    {
        long resident = 0;
        long spilled = 0;
        foreach ((MemoryBlock data, float[] sums) in _blocks.Values)
        {
            long kv = data.Key.Length * 2L;
            resident += (sums.Length * sizeof(float)) + (data.Spilled ? 0 : kv);
            spilled += data.Spilled ? kv : 0;
        }

        return Task.FromResult(new MemoryHolding(_blocks.Count, resident, spilled));
    }

    public Task DeleteAsync(string epoch, CancellationToken cancellationToken)
    {
        if (_epoch is null || _epoch == epoch)
        {
            Free();
        }

        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        TimeSpan period = resources.Options.OrphanCheckInterval;
        this.RegisterGrainTimer(CheckHeldAsync, new GrainTimerCreationOptions(period, period) { Interleave = true, KeepAlive = false });
        return Task.CompletedTask;
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        Free();
        return Task.CompletedTask;
    }

    private async Task CheckHeldAsync(CancellationToken cancellationToken)
    {
        if (!await Orphans.IsHeldAsync(GrainFactory, _sequence, _epoch, cancellationToken))
        {
            DeactivateOnIdle();
        }
    }

    /// <summary>
    /// Attends each KV head's chosen blocks: the head's rows of its blocks, in ascending block order, are gathered into
    /// one scratch K/V (only this grain's blocks, only that head: a few hundred KiB) and its G query heads attend them in
    /// one decode call (fixed key chunks, so a rerun gives the same bits); then the heads' rows go into O <c>[rows, Hq, d]</c>.
    /// </summary>
    private void Attend<T>(MemoryShape shape, MemoryAttend request, float[] output, float[] lse)
        where T : unmanaged
    {
        int rows = request.Rows;
        int d = shape.HeadDim;
        int hkv = shape.KeyValueHeads;
        int group = shape.QueryHeads / hkv;
        ReadOnlySpan<T> query = MemoryMarshal.Cast<byte, T>(request.Query);
        var headQuery = new T[rows * group * d];
        var head = new float[rows * group * d];
        var headLse = new float[rows * group];
        int most = request.Chosen.Max(c => c.Length);
        var keys = new T[most * shape.Block * d];
        var values = new T[most * shape.Block * d];
        for (int g = 0; g < hkv; g++)
        {
            int[] chosen = request.Chosen[g];
            if (chosen.Length == 0)
            {
                head.AsSpan().Clear();
                headLse.AsSpan().Fill(float.NegativeInfinity);
            }
            else
            {
                for (int i = 0; i < chosen.Length; i++)
                {
                    MemoryBlock data = _blocks[chosen[i]].Data;
                    ReadOnlySpan<T> k = MemoryMarshal.Cast<byte, T>(data.Key);
                    ReadOnlySpan<T> v = MemoryMarshal.Cast<byte, T>(data.Value);
                    for (int m = 0; m < shape.Block; m++)
                    {
                        k.Slice(((m * hkv) + g) * d, d).CopyTo(keys.AsSpan(((i * shape.Block) + m) * d));
                        v.Slice(((m * hkv) + g) * d, d).CopyTo(values.AsSpan(((i * shape.Block) + m) * d));
                    }
                }

                for (int t = 0; t < rows; t++)
                {
                    query.Slice(((t * shape.QueryHeads) + (g * group)) * d, group * d).CopyTo(headQuery.AsSpan(t * group * d));
                }

                int keyRows = chosen.Length * shape.Block;
                Attention.Decode<T>(
                    headQuery, keys.AsSpan(0, keyRows * d), values.AsSpan(0, keyRows * d), new AttentionShape(rows, keyRows, group, 1, d), AttentionMask.Full, default, head, headLse,
                    AttentionOptions.Default with { MaxThreads = 1 });
            }

            for (int t = 0; t < rows; t++)
            {
                int row = (t * shape.QueryHeads) + (g * group);
                head.AsSpan(t * group * d, group * d).CopyTo(output.AsSpan(row * d));
                headLse.AsSpan(t * group, group).CopyTo(lse.AsSpan(row));
            }
        }
    }

    /// <summary>Checks the incarnation and that the <paramref name="held"/> blocks below <paramref name="evicted"/> the caller stored are all here.</summary>
    private MemoryShape Require(string epoch, int evicted, int held)
    {
        int here = _blocks.Keys.TakeWhile(b => b < evicted).Count();
        if (here < held || _shape is null)
        {
            throw ServiceException.Degraded(
                $"memory {this.GetPrimaryKeyString()} holds {here} of the {held} evicted blocks stored in it: the silo that held them failed, so the sequence is degraded");
        }

        if (_epoch != epoch)
        {
            throw ServiceException.Conflict("id", $"memory {this.GetPrimaryKeyString()} belongs to another incarnation of that sequence");
        }

        return here == held ? _shape : throw ServiceException.Invalid("held", $"memory {this.GetPrimaryKeyString()} holds {here} blocks below {evicted}, not {held}");
    }

    /// <summary>The key sums of the first <paramref name="count"/> blocks (ascending ids) as one <c>[count, Hkv, d]</c> array, kept until the next store.</summary>
    private float[] Packed(int count)
    {
        if (_packed.Count >= count)
        {
            return _packed.Sums;
        }

        int row = _shape!.KeyValueHeads * _shape.HeadDim;
        var sums = new float[_blocks.Count * row];
        int i = 0;
        foreach (var block in _blocks.Values)
        {
            block.KeySum.CopyTo(sums, i++ * row);
        }

        _packed = (_blocks.Count, sums);
        return sums;
    }

    private void Free()
    {
        foreach (var block in _blocks.Values)
        {
            block.Data.Dispose();
        }

        _blocks.Clear();
        _packed = (0, []);
    }
}
