namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// One rank's view of point-to-point messaging between the ranks of a context-parallel run. Messages between one
/// ordered pair of ranks arrive in the order they were sent. This is the seam the in-process ranks and, later,
/// silo-to-silo transport implement.
/// </summary>
public interface IExchange
{
    int Rank { get; }

    int Size { get; }

    /// <summary>
    /// Sends <paramref name="frame"/> to <paramref name="destination"/>. The exchange takes its own reference for as
    /// long as it needs the bytes; the caller keeps (and later disposes) its own.
    /// </summary>
    ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken);

    /// <summary>The next frame from <paramref name="source"/>; the caller owns it and disposes it.</summary>
    ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken);
}
