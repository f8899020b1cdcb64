namespace LongCluster.Grains.Diagnostics;

/// <summary>
/// Measures silo-to-silo grain calls the way the ring uses them: a pair of probes spread-placed on two silos (keys
/// <c>probe~RUN/0/2</c> and <c>probe~RUN/1/2</c>), one sending KV-block-sized frames to the other one at a time and
/// timing small round trips. Behind <c>POST /v1/diagnostics/transfer</c> and <c>longcluster bench transport</c>.
/// </summary>
public interface ITransferProbeGrain : IGrainWithStringKey
{
    /// <summary>Sends <paramref name="frames"/> frames of <paramref name="frameBytes"/> bytes to <paramref name="peer"/>, then times <paramref name="calls"/> empty calls.</summary>
    [ResponseTimeout("00:30:00")]
    Task<TransferFigures> MeasureAsync(string peer, int frames, int frameBytes, int calls, CancellationToken cancellationToken);

    /// <summary>Takes a frame as a ring block is taken: copied into a pooled frame, then released.</summary>
    Task SinkAsync(Exchange.RingBlock block, CancellationToken cancellationToken);

    Task PingAsync(CancellationToken cancellationToken);

    /// <summary>The silo this probe lives on.</summary>
    Task<string> SiloAsync(CancellationToken cancellationToken);
}

/// <summary>What <see cref="ITransferProbeGrain.MeasureAsync"/> saw, between silo <see cref="From"/> and silo <see cref="To"/>.</summary>
[GenerateSerializer, Immutable]
public sealed record TransferFigures(string From, string To, int Frames, long FrameBytes, double FrameSeconds, double GigabytesPerSecond, int Calls, double P50Microseconds, double P99Microseconds);
