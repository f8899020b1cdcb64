namespace LongCluster.Grains;

/// <summary>
/// Every grain call's last line of defence: an exception leaving grain code that is not a
/// <see cref="ServiceException"/> (or cancellation, a timeout, or Orleans' own) becomes an
/// <see cref="ServiceErrorCode.Internal"/> one naming its type. Orleans serializes only types it has a codec for; an
/// exception of any other type (a kernel's, say) would fail the whole reply instead of reporting the fault.
/// </summary>
internal sealed class ServiceErrorFilter : IIncomingGrainCallFilter
{
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        try
        {
            await context.Invoke().ConfigureAwait(true); // stay on the grain's scheduler
        }
        catch (Exception e) when (!Crosses(e))
        {
            throw new ServiceException(ServiceErrorCode.Internal, null, $"{context.ImplementationMethod?.Name}: {e.GetType().Name}: {e.Message}");
        }
    }

    private static bool Crosses(Exception e) =>
        e is ServiceException or OperationCanceledException or TimeoutException || e.GetType().Namespace?.StartsWith("Orleans", StringComparison.Ordinal) == true;
}
