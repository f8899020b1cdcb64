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
    // The blocks in ascending id order: ids, their K/V (head-major, [Hkv, B, d] each), and their key sums packed
    // [count, Hkv, d] in the same order, so a score is one streaming pass over one array. Blocks come in ascending
    // order (a retry stores the same ids again), so a store appends; an id below the last one is inserted in place.
    private readonly List<int> _ids = [];
    private readonly List<MemoryBlock> _data = [];
    private float[] _keySums = [];

    // Scratch of one call at a time (calls run one at a time), kept so a step allocates only what it returns.
    private float[] _scores = [];
    private int[] _pick = [];
    private byte[] _storeKey = [];
    private byte[] _storeValue = [];
    private byte[] _headQuery = [];
    private float[] _headOutput = [];
    private float[] _headLse = [];

    private string? _sequence;
    private string? _epoch;
    private MemoryShape? _shape;
    private DType _dtype;

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
        Grow(ref _storeKey, blockBytes);
        Grow(ref _storeValue, blockBytes);
        int headBytes = shape.HeadDim * dtype.Size();
        for (int i = 0; i < n; i++)
        {
            HeadMajor(blocks.Keys.AsSpan(i * blockBytes, blockBytes), shape.Block, shape.KeyValueHeads, headBytes, _storeKey);
            HeadMajor(blocks.Values.AsSpan(i * blockBytes, blockBytes), shape.Block, shape.KeyValueHeads, headBytes, _storeValue);
            MemoryBlock data = tier.Keep(_storeKey.AsSpan(0, blockBytes), _storeValue.AsSpan(0, blockBytes), (long)sums * sizeof(float));
            int at = _ids.BinarySearch(blocks.Blocks[i]);
            if (at >= 0)
            {
                _data[at].Dispose();
                _data[at] = data;
            }
            else
            {
                at = ~at;
                Grow(ref _keySums, (_ids.Count + 1) * sums, keep: _ids.Count * sums);
                _keySums.AsSpan(at * sums, (_ids.Count - at) * sums).CopyTo(_keySums.AsSpan((at + 1) * sums));
                _ids.Insert(at, blocks.Blocks[i]);
                _data.Insert(at, data);
            }

            blocks.KeySums.AsSpan(i * sums, sums).CopyTo(_keySums.AsSpan(at * sums));
        }

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

        int held = request.Held;
        Grow(ref _scores, hkv * held);
        RetrievalAttention.ScoreBlocks(request.QuerySum, _keySums.AsSpan(0, held * hkv * d), hkv, d, _scores.AsSpan(0, hkv * held));
        int perHead = Math.Min(request.TopK, held);
        var blocks = new int[hkv * perHead];
        var best = new float[hkv * perHead];
        Grow(ref _pick, perHead);
        Span<int> chosen = _pick.AsSpan(0, perHead);
        for (int g = 0; g < hkv && perHead > 0; g++)
        {
            ReadOnlySpan<float> head = _scores.AsSpan(g * held, held);
            RetrievalAttention.SelectTop(head, perHead, chosen);
            for (int i = 0; i < perHead; i++)
            {
                blocks[(g * perHead) + i] = _ids[chosen[i]];
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

        foreach (int[] blocks in request.Chosen)
        {
            foreach (int block in blocks)
            {
                if (block >= request.Evicted || _ids.BinarySearch(block) < 0)
                {
                    throw ServiceException.Invalid("chosen", $"block {block} is not among the evicted blocks held by memory {this.GetPrimaryKeyString()}");
                }
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
        long sums = _shape is null ? 0 : (long)_shape.KeyValueHeads * _shape.HeadDim * sizeof(float);
        foreach (MemoryBlock data in _data)
        {
            long kv = data.Key.Length * 2L;
            resident += sums + (data.Spilled ? 0 : kv);
            spilled += data.Spilled ? kv : 0;
        }

        return Task.FromResult(new MemoryHolding(_data.Count, resident, spilled));
    }

    public Task<int> CountAsync(string epoch, int evicted, CancellationToken cancellationToken) =>
        Task.FromResult(_epoch == epoch ? Below(evicted) : 0);

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
        Orphans.Watch(this, resources.Options.OrphanCheckInterval, CheckHeldAsync);
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
    /// Attends each KV head's chosen blocks where they lie: a head's rows of a block are one run (blocks are kept
    /// head-major), so its G query heads attend each chosen block in place, in ascending block order, and the blocks'
    /// partials merge by LSE in that order (a rerun gives the same bits; nothing is copied out of the blocks). Then the
    /// heads' rows go into O <c>[rows, Hq, d]</c>.
    /// </summary>
    private void Attend<T>(MemoryShape shape, MemoryAttend request, float[] output, float[] lse)
        where T : unmanaged
    {
        int rows = request.Rows;
        int d = shape.HeadDim;
        int hkv = shape.KeyValueHeads;
        int group = shape.QueryHeads / hkv;
        int size = Marshal.SizeOf<T>();
        ReadOnlySpan<T> query = MemoryMarshal.Cast<byte, T>(request.Query);
        Grow(ref _headQuery, rows * group * d * size);
        Grow(ref _headOutput, 2 * rows * group * d);
        Grow(ref _headLse, 2 * rows * group);
        Span<T> headQuery = MemoryMarshal.Cast<byte, T>(_headQuery.AsSpan(0, rows * group * d * size));
        Span<float> head = _headOutput.AsSpan(0, rows * group * d);
        Span<float> headLse = _headLse.AsSpan(0, rows * group);
        Span<float> block = _headOutput.AsSpan(rows * group * d, rows * group * d);
        Span<float> blockLse = _headLse.AsSpan(rows * group, rows * group);
        var blockShape = new AttentionShape(rows, shape.Block, group, 1, d);
        AttentionOptions oneThread = AttentionOptions.Default with { MaxThreads = 1 };
        int span = shape.Block * d;
        for (int g = 0; g < hkv; g++)
        {
            head.Clear();
            headLse.Fill(float.NegativeInfinity);
            int[] chosen = request.Chosen[g];
            if (chosen.Length > 0)
            {
                for (int t = 0; t < rows; t++)
                {
                    query.Slice(((t * shape.QueryHeads) + (g * group)) * d, group * d).CopyTo(headQuery[(t * group * d)..]);
                }

                for (int i = 0; i < chosen.Length; i++)
                {
                    MemoryBlock data = _data[_ids.BinarySearch(chosen[i])];
                    Attention.Decode<T>(
                        headQuery, MemoryMarshal.Cast<byte, T>(data.Key).Slice(g * span, span), MemoryMarshal.Cast<byte, T>(data.Value).Slice(g * span, span),
                        blockShape, AttentionMask.Full, default, i == 0 ? head : block, i == 0 ? headLse : blockLse, oneThread);
                    if (i > 0)
                    {
                        Attention.MergePartials(head, headLse, block, blockLse, head, headLse, d);
                    }
                }
            }

            for (int t = 0; t < rows; t++)
            {
                int row = (t * shape.QueryHeads) + (g * group);
                head.Slice(t * group * d, group * d).CopyTo(output.AsSpan(row * d));
                headLse.Slice(t * group, group).CopyTo(lse.AsSpan(row));
            }
        }
    }

    /// <summary>
    /// A block's <c>[B, Hkv, d]</c> rows (as stored by the shard) as <c>[Hkv, B, d]</c> in <paramref name="destination"/>:
    /// a KV head's rows of a block are then one run, which a step reads with one copy instead of B rows a page apart.
    /// </summary>
    private static void HeadMajor(ReadOnlySpan<byte> block, int rows, int heads, int headBytes, Span<byte> destination)
    {
        for (int m = 0; m < rows; m++)
        {
            for (int g = 0; g < heads; g++)
            {
                block.Slice(((m * heads) + g) * headBytes, headBytes).CopyTo(destination[(((g * rows) + m) * headBytes)..]);
            }
        }
    }

    /// <summary>Makes <paramref name="buffer"/> at least <paramref name="length"/> long (doubling), keeping its first <paramref name="keep"/> elements.</summary>
    private static void Grow<TElement>(ref TElement[] buffer, int length, int keep = 0)
    {
        if (buffer.Length < length)
        {
            var grown = new TElement[Math.Max(length, buffer.Length * 2)];
            buffer.AsSpan(0, keep).CopyTo(grown);
            buffer = grown;
        }
    }

    /// <summary>Checks the incarnation and that the <paramref name="held"/> blocks below <paramref name="evicted"/> the caller stored are all here.</summary>
    private MemoryShape Require(string epoch, int evicted, int held)
    {
        int here = Below(evicted);
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

    /// <summary>Blocks held with ids below <paramref name="evicted"/>.</summary>
    private int Below(int evicted)
    {
        int found = _ids.BinarySearch(evicted);
        return found >= 0 ? found : ~found;
    }

    private void Free()
    {
        foreach (MemoryBlock data in _data)
        {
            data.Dispose();
        }

        _ids.Clear();
        _data.Clear();
        _keySums = [];
    }
}
