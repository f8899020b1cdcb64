using System.Runtime.InteropServices;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Tensors;

namespace LongCluster.Grains;

/// <summary>One layer's KV of one shard, in the sequence's storage dtype, behind a dtype-free face. Disposing returns its KV buffers to the pool.</summary>
internal interface IShardStore : IDisposable
{
    long StoredRows { get; }

    long StoredBytes { get; }

    int SegmentCount { get; }

    void Truncate(int segments);

    /// <summary>Runs this shard's part of a layer over its uploaded rows; writes O <c>[n, Hq, d]</c> and LSE <c>[n, Hq]</c> for them.</summary>
    Task<RankTimings> PrefillAsync(
        IExchange exchange, LayoutPlan plan, byte[] query, byte[] key, byte[] value, long[] positions, int[] documents, Memory<float> output, Memory<float> logSumExp,
        AttentionMask mask, AttentionOptions options, CancellationToken cancellationToken);

    /// <summary>Appends decoded rows; returns the segment count that <see cref="Truncate"/> takes to undo exactly this append.</summary>
    int Append(long[] positions, int[] documents, byte[] key, byte[] value);

    void Attend(byte[] query, long[] positions, int[] documents, int queryHeads, int keyValueHeads, AttentionMask mask, AttentionOptions options, Span<float> output, Span<float> logSumExp);

    static IShardStore Create(DType dtype, int rank, int headDim, TimeSpan receiveTimeout, IAttentionBackend backend) => dtype switch
    {
        DType.F32 => new ShardStore<float>(rank, headDim, receiveTimeout, backend),
        DType.F16 => new ShardStore<Half>(rank, headDim, receiveTimeout, backend),
        DType.BF16 => new ShardStore<BFloat16>(rank, headDim, receiveTimeout, backend),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "storage dtype must be f32, f16 or bf16"),
    };
}

internal sealed class ShardStore<T>(int rank, int headDim, TimeSpan receiveTimeout, IAttentionBackend backend) : IShardStore
    where T : unmanaged
{
    private readonly ContextParallelRank<T> _rank = new(rank, headDim) { ReceiveTimeout = receiveTimeout, Backend = backend };

    public long StoredRows => _rank.StoredRows;

    public long StoredBytes => _rank.StoredBytes;

    public int SegmentCount => _rank.SegmentCount;

    public void Truncate(int segments) => _rank.Truncate(segments);

    public void Dispose() => _rank.Dispose();

    public Task<RankTimings> PrefillAsync(
        IExchange exchange, LayoutPlan plan, byte[] query, byte[] key, byte[] value, long[] positions, int[] documents, Memory<float> output, Memory<float> logSumExp,
        AttentionMask mask, AttentionOptions options, CancellationToken cancellationToken) =>
        _rank.PrefillChunkAsync(
            exchange, plan, RankView<T>.AllRows(ByteMemory<T>.Of(query), ByteMemory<T>.Of(key), ByteMemory<T>.Of(value), positions, documents, output, logSumExp), mask, options, null, cancellationToken);

    public int Append(long[] positions, int[] documents, byte[] key, byte[] value) => _rank.Append(positions, documents, MemoryMarshal.Cast<byte, T>(key), MemoryMarshal.Cast<byte, T>(value));

    public void Attend(byte[] query, long[] positions, int[] documents, int queryHeads, int keyValueHeads, AttentionMask mask, AttentionOptions options, Span<float> output, Span<float> logSumExp) =>
        _rank.AttendStored(MemoryMarshal.Cast<byte, T>(query), positions, documents, queryHeads, keyValueHeads, mask, options, output, logSumExp);
}
