namespace LongCluster.Grains;

/// <summary>The question an idle shard or memory grain asks before it lets itself be collected.</summary>
internal static class Orphans
{
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
