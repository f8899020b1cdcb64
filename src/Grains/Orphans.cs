namespace LongCluster.Grains;

/// <summary>The question an idle shard or memory grain asks before it lets itself be collected.</summary>
internal static class Orphans
{
    /// <summary>Runs <paramref name="check"/> every <paramref name="period"/> on <paramref name="grain"/>, interleaved, without keeping it alive.</summary>
    public static void Watch(Grain grain, TimeSpan period, Func<CancellationToken, Task> check) =>
        grain.RegisterGrainTimer(check, new GrainTimerCreationOptions(period, period) { Interleave = true, KeepAlive = false });

    /// <summary>
    /// Whether the coordinator of <paramref name="sequence"/> still holds incarnation <paramref name="epoch"/>: false for
    /// a grain that holds nothing (null ids); true when the coordinator cannot be asked now — keep the data rather than lose it.
    /// </summary>
    public static async Task<bool> IsHeldAsync(IGrainFactory grains, string? sequence, string? epoch, CancellationToken cancellationToken)
    {
        if (sequence is null || epoch is null)
        {
            return false;
        }

        try
        {
            return await grains.GetGrain<ICoordinatorGrain>(sequence).HoldsAsync(epoch, cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return true;
        }
    }
}
