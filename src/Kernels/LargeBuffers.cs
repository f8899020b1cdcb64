using System.Buffers;
using System.Runtime.CompilerServices;

namespace LongCluster.Kernels;

/// <summary>
/// The pool of large buffers that one thread rents and another returns: the KV segments ranks keep (handed back when
/// a rank is disposed, reused by the next sequence's ranks) and the scratch of a chunk's run (accumulators, partials,
/// the Q copy, packed K/V tiles). On the 2-core VMs a first touch of fresh memory costs about 3 ms per MB, so a buffer
/// the pool fails to hand back is paid for again in page faults. Not <see cref="ArrayPool{T}.Shared"/>: it keeps the
/// last buffer a thread returns in that thread's own slot, where the next rent, on whichever pool thread runs the next
/// layer, never finds it (measured: 5 of 20 rents of a 64 MiB array from another thread got a new one; in a silo's
/// profile of 16384-token layers, page faults were 13% of its CPU and a third of them hit pooled scratch). These
/// buckets are the same for every thread. Unlike the shared pool they never trim, so what they keep is bounded by the
/// constants below: per element type, at most <c>BuffersPerSize</c> buffers of each power-of-two size up to a quarter GiB.
/// Buffers of 4 MiB and more are on huge pages where Linux gives them (<see cref="HugePagePool{T}"/>): decode streams
/// the KV segments end to end.
/// </summary>
internal static class LargeBuffers<T>
    where T : unmanaged
{
    // Larger buffers are left to the GC.
    private const int MaxPooledBytes = 1 << 28;

    // Per power-of-two size: an accumulator and a partial for each of 4 ranks (an in-process sequence of 4 shards, or
    // 4 shard layers on a silo).
    private const int BuffersPerSize = 8;

    public static ArrayPool<T> Pool { get; } = new HugePagePool<T>(ArrayPool<T>.Create(MaxPooledBytes / Unsafe.SizeOf<T>(), BuffersPerSize));
}
