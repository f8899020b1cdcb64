using System.Buffers;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// Buffers for the KV segments ranks keep, handed back when a rank is disposed and reused by the next sequence's
/// ranks: on the 2-core VMs a first touch of fresh memory costs about 3 ms per MB, so a chunk that stored its KV in
/// fresh buffers spent more outside the ring than all its copies. Not <see cref="ArrayPool{T}.Shared"/>: a sequence
/// is disposed on one thread, and the shared pool keeps the last buffer a thread returns in that thread's own slot,
/// where ranks running on other threads never find it; this pool's buckets are the same for every thread. Unlike the
/// shared pool it never trims, so what it keeps is bounded by the constants below.
/// </summary>
internal static class SegmentPool
{
    // Segments larger than this are left to the GC: the largest kept buffer is a quarter GiB.
    private const int MaxPooledBytes = 1 << 28;

    // Per power-of-two size: the ranks of one in-process sequence of up to 4 shards, or 4 shard layers on a silo.
    private const int BuffersPerSize = 4;

    public static ArrayPool<byte> Instance { get; } = ArrayPool<byte>.Create(MaxPooledBytes, BuffersPerSize);
}
