namespace LongCluster.Kernels;

/// <summary>
/// Runs items 0..n−1 on up to <c>threads</c> workers that take the next index from one shared counter, so items
/// start strictly in index order (callers put the largest first). Parallel.For splits the range between workers
/// up front, which leaves the tail unbalanced when item costs fall with the index, as they do for causal masks.
/// </summary>
internal static class WorkQueue
{
    public static void Run(int items, int threads, Action<int> body)
    {
        if (threads <= 1 || items <= 1)
        {
            for (int i = 0; i < items; i++)
            {
                body(i);
            }

            return;
        }

        int next = -1;
        int workers = Math.Min(threads, items);
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ =>
        {
            for (int i = Interlocked.Increment(ref next); i < items; i = Interlocked.Increment(ref next))
            {
                body(i);
            }
        });
    }
}
