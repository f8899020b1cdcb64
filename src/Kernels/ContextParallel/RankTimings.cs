namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// Wall time of one rank for one chunk: the scatter (reading its rows from the caller's view into its segment and Q
/// buffer, and the all-to-all in a Ulysses group), kernel compute (and merges) in the ring, time spent waiting for
/// the next block after computing, and the gather (waiting, where the caller asks, for the other ranks' rings to end;
/// the all-to-all; writing its O and LSE rows into the view).
/// </summary>
public sealed record RankTimings(TimeSpan Scatter, TimeSpan Compute, TimeSpan Waiting, TimeSpan Gather)
{
    public TimeSpan Total => Scatter + Compute + Waiting + Gather;
}
