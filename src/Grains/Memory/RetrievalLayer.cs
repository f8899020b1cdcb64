using System.Runtime.InteropServices;
using LongCluster.Kernels;
using LongCluster.Tensors;

namespace LongCluster.Grains.Memory;

/// <summary>
/// One layer of a retrieval sequence on its shard (DESIGN.md, "Memory tier: the retrieval rule"): the shard keeps the
/// init rows and the local window (K, V) and the query sum of the block being filled; a block's representatives are
/// fixed when its last row arrives, and whole blocks move to the layer's memory grains as the window slides. Each chunk
/// of a request asks the memory grains for their best blocks, takes the top-k per KV head, attends its local window and
/// init here while the holders attend the chosen blocks, and merges their partials by LSE, in a fixed order (window,
/// init, memory part 0, 1, …).
/// Calls run one at a time (the shard's turn). <see cref="Checkpoint"/> marks a finished step; <see cref="Restore"/>
/// undoes everything since (blocks already stored in memory grains are ignored: they sit past the evicted count and a
/// retry stores them again).
/// </summary>
internal interface IRetrievalLayer
{
    /// <summary>Tokens of the sequence this layer has taken.</summary>
    long Length { get; }

    /// <summary>Rows whose K and V the shard itself holds (init and window).</summary>
    long StoredRows { get; }

    long StoredBytes { get; }

    /// <summary>
    /// Takes the next <paramref name="rows"/> rows of the sequence (one request: Q <c>[rows, Hq, d]</c>, K and V
    /// <c>[rows, Hkv, d]</c> in the storage dtype) and writes their O <c>[rows, Hq, d]</c> and LSE <c>[rows, Hq]</c>.
    /// </summary>
    Task RunAsync(ReadOnlyMemory<byte> query, ReadOnlyMemory<byte> key, ReadOnlyMemory<byte> value, int rows, Memory<float> output, Memory<float> logSumExp, AttentionOptions options, CancellationToken cancellationToken);

    void Checkpoint();

    void Restore();

    /// <summary>
    /// Asks every memory grain whether it still holds the blocks stored in it below the evicted count: null when all do,
    /// else what is missing where (a grain re-activated after its silo failed holds none).
    /// </summary>
    Task<string?> MissingAsync(CancellationToken cancellationToken);

    /// <summary>Takes <paramref name="history"/> as this layer's state (see <see cref="RetrievalHistory"/>); the sizes are checked.</summary>
    void Load(RetrievalHistory history);

    static IRetrievalLayer Create(DType dtype, RetrievalRule rule, MemoryShape shape, string sequence, string epoch, IMemoryGrain[] parts) => dtype switch
    {
        DType.F32 => new RetrievalLayer<float>(rule, shape, sequence, epoch, parts),
        DType.F16 => new RetrievalLayer<Half>(rule, shape, sequence, epoch, parts),
        DType.BF16 => new RetrievalLayer<BFloat16>(rule, shape, sequence, epoch, parts),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "storage dtype must be f32, f16 or bf16"),
    };
}

internal sealed class RetrievalLayer<T>(RetrievalRule rule, MemoryShape shape, string sequence, string epoch, IMemoryGrain[] parts) : IRetrievalLayer
    where T : unmanaged
{
    /// <summary>Rows up to which a chunk's resident keys go through the decode kernel rather than the forward one.</summary>
    private const int DecodeRows = 8;

    private readonly int _d = shape.HeadDim;
    private readonly int _hq = shape.QueryHeads;
    private readonly int _hkv = shape.KeyValueHeads;
    private readonly int _kvRow = shape.KeyValueHeads * shape.HeadDim * Marshal.SizeOf<T>();
    private readonly int _qRow = shape.QueryHeads * shape.HeadDim * Marshal.SizeOf<T>();
    private readonly RowBuffer _initKey = new(shape.KeyValueHeads * shape.HeadDim * Marshal.SizeOf<T>());
    private readonly RowBuffer _initValue = new(shape.KeyValueHeads * shape.HeadDim * Marshal.SizeOf<T>());
    private readonly RowBuffer _windowKey = new(shape.KeyValueHeads * shape.HeadDim * Marshal.SizeOf<T>());
    private readonly RowBuffer _windowValue = new(shape.KeyValueHeads * shape.HeadDim * Marshal.SizeOf<T>());
    private readonly Dictionary<int, float[]> _keySums = [];
    private float[] _querySum = new float[shape.KeyValueHeads * shape.HeadDim];
    private long _windowBase = rule.Init;
    private long _length;
    private int _evicted;
    private (long Length, int Evicted, float[] QuerySum) _checkpoint = (0, 0, new float[shape.KeyValueHeads * shape.HeadDim]);

    // Scratch of the step in progress (calls run one at a time), kept between steps.
    private long[] _queryPositions = [];
    private long[] _keyPositions = [];
    private float[] _initOutput = [];
    private float[] _initLse = [];

    public long Length => _length;

    public long StoredRows => _initKey.Count + _windowKey.Count;

    public long StoredBytes => (2L * StoredRows * _kvRow) + ((long)_keySums.Count * _hkv * _d * sizeof(float));

    public async Task RunAsync(
        ReadOnlyMemory<byte> query, ReadOnlyMemory<byte> key, ReadOnlyMemory<byte> value, int rows, Memory<float> output, Memory<float> logSumExp, AttentionOptions options, CancellationToken cancellationToken)
    {
        long start = _length;
        for (int c0 = 0; c0 < rows; c0 += rule.Chunk)
        {
            int n = Math.Min(rule.Chunk, rows - c0);
            long t0 = start + c0;
            ReadOnlyMemory<byte> chunkQuery = query.Slice(c0 * _qRow, n * _qRow);
            Append(chunkQuery.Span, key.Span.Slice(c0 * _kvRow, n * _kvRow), value.Span.Slice(c0 * _kvRow, n * _kvRow), n);
            int evicted = rule.EvictedBlocks(t0, rule.BlockCount(t0 + n));
            await EvictAsync(evicted, cancellationToken);
            Memory<float> o = output.Slice(c0 * _hq * _d, n * _hq * _d);
            Memory<float> l = logSumExp.Slice(c0 * _hq, n * _hq);
            if (evicted == 0)
            {
                Resident(chunkQuery.Span, t0, n, evicted, o.Span, l.Span, options);
                continue;
            }

            // The memory grains score their blocks with the cores to themselves (the shard waits); then, while the
            // holders attend the chosen blocks, the shard attends its window and init, and merges their partials last.
            // (Attending the window during the score round instead left the attend round alone on the cores and made a
            // decode step at 256Ki tokens about 0.6 ms longer on a 2-core machine.)
            int[][] chosen = await SelectAsync(chunkQuery, n, evicted, cancellationToken);
            Task<MemoryPartial[]> attending = AttendMemoryAsync(chunkQuery, n, evicted, chosen, cancellationToken);
            Resident(chunkQuery.Span, t0, n, evicted, o.Span, l.Span, options);
            foreach (MemoryPartial partial in await attending)
            {
                Attention.MergePartials(o.Span, l.Span, partial.Output, partial.LogSumExp, o.Span, l.Span, _d);
            }
        }
    }

    public void Checkpoint()
    {
        long keep = rule.BlockStart(_evicted);
        if (keep > _windowBase)
        {
            _windowKey.DropFront((int)(keep - _windowBase));
            _windowValue.DropFront((int)(keep - _windowBase));
            _windowBase = keep;
        }

        foreach (int block in _keySums.Keys.Where(b => b < _evicted).ToArray())
        {
            _keySums.Remove(block);
        }

        _checkpoint = (_length, _evicted, (float[])_querySum.Clone());
    }

    public void Restore()
    {
        (long length, int evicted, float[] querySum) = _checkpoint;
        _initKey.Truncate((int)Math.Min(length, rule.Init));
        _initValue.Truncate((int)Math.Min(length, rule.Init));
        _windowKey.Truncate((int)Math.Max(0, length - _windowBase));
        _windowValue.Truncate((int)Math.Max(0, length - _windowBase));
        int blocks = rule.BlockCount(length);
        foreach (int block in _keySums.Keys.Where(b => b >= blocks).ToArray())
        {
            _keySums.Remove(block);
        }

        _querySum = (float[])querySum.Clone();
        _length = length;
        _evicted = evicted;
    }

    public async Task<string?> MissingAsync(CancellationToken cancellationToken)
    {
        // Blocks below the count are stored before it moves (EvictAsync), so every one of them should be there.
        int evicted = _evicted;
        int[] held = await Task.WhenAll(parts.Select((part, i) => Held(i, evicted) > 0 ? part.CountAsync(epoch, evicted, cancellationToken) : Task.FromResult(0)));
        for (int i = 0; i < parts.Length; i++)
        {
            if (held[i] < Held(i, evicted))
            {
                return $"memory part {i} holds {held[i]} of the {Held(i, evicted)} evicted blocks stored in it (its silo failed)";
            }
        }

        return null;
    }

    public void Load(RetrievalHistory history)
    {
        int init = (int)Math.Min(rule.Init, history.Length);
        long windowStart = rule.BlockStart(history.Evicted);
        long window = history.Length - windowStart;
        int windowBlocks = rule.BlockCount(history.Length) - history.Evicted;
        int sums = _hkv * _d;
        if (history.Evicted < 0 || history.Evicted > rule.EvictedBlocks(history.Length, rule.BlockCount(history.Length + 1)) || window < 0
            || history.InitKey.Length != (long)init * _kvRow || history.InitValue.Length != history.InitKey.Length
            || history.WindowKey.Length != window * _kvRow || history.WindowValue.Length != history.WindowKey.Length
            || history.WindowKeySums.Length != (long)windowBlocks * sums || history.PendingQuerySum.Length != sums)
        {
            throw new ArgumentException(
                $"a history of {history.Length} tokens with {history.Evicted} blocks evicted needs {init} init rows, {window} window rows of {_kvRow} bytes, "
                + $"{windowBlocks} window key sums and one pending query sum of {sums} values");
        }

        _initKey.Truncate(0);
        _initValue.Truncate(0);
        _windowKey.Truncate(0);
        _windowValue.Truncate(0);
        _initKey.Append(history.InitKey);
        _initValue.Append(history.InitValue);
        _windowKey.Append(history.WindowKey);
        _windowValue.Append(history.WindowValue);
        _windowBase = windowStart;
        _keySums.Clear();
        for (int i = 0; i < windowBlocks; i++)
        {
            _keySums[history.Evicted + i] = history.WindowKeySums.AsSpan(i * sums, sums).ToArray();
        }

        history.PendingQuerySum.CopyTo(_querySum, 0);
        _length = history.Length;
        _evicted = history.Evicted;
        Checkpoint();
    }

    /// <summary>Keeps a chunk's K and V rows and adds its queries to the sums of their blocks, fixing each block's representatives when its last row arrives.</summary>
    private void Append(ReadOnlySpan<byte> query, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, int rows)
    {
        long t0 = _length;
        int toInit = (int)Math.Clamp(rule.Init - t0, 0, rows);
        _initKey.Append(key[..(toInit * _kvRow)]);
        _initValue.Append(value[..(toInit * _kvRow)]);
        _windowKey.Append(key[(toInit * _kvRow)..]);
        _windowValue.Append(value[(toInit * _kvRow)..]);
        var blockShape = new AttentionShape(rule.Block, rule.Block, _hq, _hkv, _d);
        var positions = new int[_hkv * rule.Representatives];
        for (int i = toInit; i < rows;)
        {
            long p = t0 + i;
            int block = (int)((p - rule.Init) / rule.Block);
            long blockEnd = rule.BlockStart(block) + rule.Block;
            int run = (int)Math.Min(rows - i, blockEnd - p);
            RetrievalAttention.AddQuerySum(MemoryMarshal.Cast<byte, T>(query.Slice(i * _qRow, run * _qRow)), blockShape with { QueryTokens = run, KeyTokens = run }, _querySum);
            i += run;
            if (p + run == blockEnd)
            {
                var keySum = new float[_hkv * _d];
                RetrievalAttention.RepresentativesOfSum(_querySum, MemoryMarshal.Cast<byte, T>(_windowKey.Rows(WindowRow(rule.BlockStart(block)), rule.Block)), blockShape, rule.Representatives, positions, keySum);
                _keySums[block] = keySum;
                _querySum.AsSpan().Clear();
            }
        }

        _length = t0 + rows;
    }

    /// <summary>Moves blocks <c>_evicted..evicted−1</c> to their memory grains (block j to part j mod parts), one call per part.</summary>
    private async Task EvictAsync(int evicted, CancellationToken cancellationToken)
    {
        if (evicted <= _evicted)
        {
            return;
        }

        int sums = _hkv * _d;
        var stores = new List<Task>();
        for (int part = 0; part < parts.Length; part++)
        {
            int[] blocks = [.. Enumerable.Range(_evicted, evicted - _evicted).Where(j => j % parts.Length == part)];
            if (blocks.Length == 0)
            {
                continue;
            }

            int blockBytes = rule.Block * _kvRow;
            var keys = new byte[blocks.Length * blockBytes];
            var values = new byte[blocks.Length * blockBytes];
            var keySums = new float[blocks.Length * sums];
            for (int i = 0; i < blocks.Length; i++)
            {
                int row = WindowRow(rule.BlockStart(blocks[i]));
                _windowKey.Rows(row, rule.Block).CopyTo(keys.AsSpan(i * blockBytes));
                _windowValue.Rows(row, rule.Block).CopyTo(values.AsSpan(i * blockBytes));
                _keySums[blocks[i]].CopyTo(keySums, i * sums);
            }

            stores.Add(parts[part].StoreAsync(new MemoryStore(sequence, epoch, shape, blocks, keys, values, keySums), cancellationToken));
        }

        await Task.WhenAll(stores);
        _evicted = evicted;
    }

    /// <summary>The chunk's partial over the keys the shard holds: the local window <c>[n_init + J·B, t]</c>, then init <c>[0, min(n_init, t+1))</c> merged in.</summary>
    private void Resident(ReadOnlySpan<byte> chunkQuery, long t0, int n, int evicted, Span<float> output, Span<float> logSumExp, AttentionOptions options)
    {
        ReadOnlySpan<T> query = MemoryMarshal.Cast<byte, T>(chunkQuery);
        ReadOnlySpan<long> queryPositions = Positions(ref _queryPositions, t0, n);
        long windowStart = rule.BlockStart(evicted);
        int local = (int)Math.Max(0, t0 + n - windowStart);
        if (local > 0)
        {
            int row = WindowRow(windowStart);
            Attend(
                query, MemoryMarshal.Cast<byte, T>(_windowKey.Rows(row, local)), MemoryMarshal.Cast<byte, T>(_windowValue.Rows(row, local)),
                new AttentionShape(n, local, _hq, _hkv, _d), new AttentionTokens(queryPositions, Positions(ref _keyPositions, windowStart, local)), output, logSumExp, options);
        }
        else
        {
            output.Clear();
            logSumExp.Fill(float.NegativeInfinity);
        }

        int init = (int)Math.Min(rule.Init, t0 + n);
        if (init > 0)
        {
            Span<float> o = Scratch(ref _initOutput, output.Length);
            Span<float> l = Scratch(ref _initLse, logSumExp.Length);
            Attend(
                query, MemoryMarshal.Cast<byte, T>(_initKey.Rows(0, init)), MemoryMarshal.Cast<byte, T>(_initValue.Rows(0, init)),
                new AttentionShape(n, init, _hq, _hkv, _d), new AttentionTokens(queryPositions, Positions(ref _keyPositions, 0, init)), o, l, options);
            Attention.MergePartials(output, logSumExp, o, l, output, logSumExp, _d);
        }
    }

    /// <summary>
    /// Causal attention of a chunk's rows over keys the shard holds: the decode kernel (split over fixed key chunks) for
    /// a few rows — a decode step —, the forward kernel for a prefill chunk.
    /// </summary>
    private static void Attend(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, scoped AttentionTokens tokens, Span<float> output, Span<float> logSumExp, AttentionOptions options)
    {
        if (shape.QueryTokens <= DecodeRows)
        {
            Attention.Decode(query, key, value, shape, AttentionMask.Causal, tokens, output, logSumExp, options);
        }
        else
        {
            Attention.Forward(query, key, value, shape, AttentionMask.Causal, tokens, output, logSumExp, options);
        }
    }

    /// <summary>
    /// The chunk's blocks per KV head: all evicted ones when there are no more than top-k, else each part's best
    /// candidates, listed in ascending block order, and the global top-k of them (ties to the lower block).
    /// </summary>
    private async Task<int[][]> SelectAsync(ReadOnlyMemory<byte> chunkQuery, int n, int evicted, CancellationToken cancellationToken)
    {
        if (evicted <= rule.TopK)
        {
            int[] all = [.. Enumerable.Range(0, evicted)];
            return [.. Enumerable.Range(0, _hkv).Select(_ => all)];
        }

        var querySum = new float[_hkv * _d];
        RetrievalAttention.QuerySum(MemoryMarshal.Cast<byte, T>(chunkQuery.Span), new AttentionShape(n, n, _hq, _hkv, _d), querySum);
        var calls = new List<Task<MemoryCandidates>>();
        for (int part = 0; part < parts.Length; part++)
        {
            int held = Held(part, evicted);
            if (held > 0)
            {
                calls.Add(parts[part].ScoreAsync(new MemoryScore(epoch, evicted, held, rule.TopK, querySum), cancellationToken));
            }
        }

        MemoryCandidates[] candidates = await Task.WhenAll(calls);
        var chosen = new int[_hkv][];
        var pick = new int[rule.TopK];
        int listed = candidates.Sum(c => c.PerHead);
        var blocks = new int[listed];
        var scores = new float[listed];
        for (int g = 0; g < _hkv; g++)
        {
            int at = 0;
            foreach (MemoryCandidates c in candidates)
            {
                c.Blocks.AsSpan(g * c.PerHead, c.PerHead).CopyTo(blocks.AsSpan(at));
                c.Scores.AsSpan(g * c.PerHead, c.PerHead).CopyTo(scores.AsSpan(at));
                at += c.PerHead;
            }

            // Ascending block order (the parts hold disjoint blocks), so that SelectTop's ties go to the lower block.
            Array.Sort(blocks, scores);
            int count = RetrievalAttention.SelectTop(scores, rule.TopK, pick);
            chosen[g] = new int[count];
            for (int i = 0; i < count; i++)
            {
                chosen[g][i] = blocks[pick[i]];
            }
        }

        return chosen;
    }

    /// <summary>Asks each part that holds chosen blocks for its partial; the partials come back in part order, for the caller to merge.</summary>
    private Task<MemoryPartial[]> AttendMemoryAsync(ReadOnlyMemory<byte> chunkQuery, int n, int evicted, int[][] chosen, CancellationToken cancellationToken)
    {
        byte[] query = chunkQuery.ToArray();
        var calls = new List<Task<MemoryPartial>>();
        for (int part = 0; part < parts.Length; part++)
        {
            int[][] here = [.. chosen.Select(blocks => blocks.Where(j => j % parts.Length == part).ToArray())];
            if (here.Any(blocks => blocks.Length > 0))
            {
                calls.Add(parts[part].AttendAsync(new MemoryAttend(epoch, evicted, Held(part, evicted), n, query, here), cancellationToken));
            }
        }

        return Task.WhenAll(calls);
    }

    /// <summary>Blocks below <paramref name="evicted"/> that live in part <paramref name="part"/> (block j in part j mod parts).</summary>
    private int Held(int part, int evicted) => (evicted / parts.Length) + (part < evicted % parts.Length ? 1 : 0);

    private int WindowRow(long position) => (int)(position - _windowBase);

    /// <summary>Positions <c>start..start+count−1</c>, written into <paramref name="buffer"/> (kept between steps, grown as needed).</summary>
    private static ReadOnlySpan<long> Positions(ref long[] buffer, long start, int count)
    {
        Span<long> positions = Scratch(ref buffer, count);
        for (int i = 0; i < count; i++)
        {
            positions[i] = start + i;
        }

        return positions;
    }

    /// <summary>The first <paramref name="length"/> elements of <paramref name="buffer"/>, grown (doubling) when short: scratch kept between steps, so a decode step allocates little.</summary>
    private static Span<TItem> Scratch<TItem>(ref TItem[] buffer, int length)
    {
        if (buffer.Length < length)
        {
            buffer = new TItem[Math.Max(length, buffer.Length * 2)];
        }

        return buffer.AsSpan(0, length);
    }

    /// <summary>Rows of one tensor that grow at the end and are dropped from the front.</summary>
    private sealed class RowBuffer(int rowBytes)
    {
        private byte[] _bytes = [];

        public int Count { get; private set; }

        public ReadOnlySpan<byte> Rows(int first, int count) => _bytes.AsSpan(first * rowBytes, count * rowBytes);

        public void Append(ReadOnlySpan<byte> rows)
        {
            int needed = (Count * rowBytes) + rows.Length;
            if (needed > _bytes.Length)
            {
                Array.Resize(ref _bytes, Math.Max(needed, _bytes.Length * 2));
            }

            rows.CopyTo(_bytes.AsSpan(Count * rowBytes));
            Count += rows.Length / rowBytes;
        }

        public void DropFront(int rows)
        {
            _bytes.AsSpan(rows * rowBytes, (Count - rows) * rowBytes).CopyTo(_bytes);
            Count -= rows;
        }

        public void Truncate(int rows) => Count = Math.Min(Count, rows);
    }
}
