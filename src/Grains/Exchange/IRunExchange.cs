using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Grains.Exchange;

/// <summary>One rank's messaging in one context-parallel run of a layer, over the cluster.</summary>
public interface IRunExchange : IExchange, IAsyncDisposable
{
    /// <summary>Bytes this rank put on the wire to other silos.</summary>
    long BytesSent { get; }

    /// <summary>Time its frames spent travelling to other silos (in the background, overlapping compute).</summary>
    TimeSpan TransferTime { get; }

    /// <summary>Waits until every frame this rank sent was delivered (or the run was aborted); throws the first send failure.</summary>
    Task CompleteAsync(CancellationToken cancellationToken);
}
