using System.Diagnostics;
using LongCluster.Grains.Exchange;
using LongCluster.Grains.Placement;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Grains.Diagnostics;

[SpreadPlacement]
internal sealed class TransferProbeGrain(ILocalSiloDetails silo) : Grain, ITransferProbeGrain
{
    public async Task<TransferFigures> MeasureAsync(string peer, int frames, int frameBytes, int calls, CancellationToken cancellationToken)
    {
        if (frames < 1 || frameBytes < 16 || calls < 1)
        {
            throw ServiceException.Invalid("frames", $"expected frames ≥ 1, frameBytes ≥ 16 and calls ≥ 1, got {frames}, {frameBytes} and {calls}");
        }

        ITransferProbeGrain target = GrainFactory.GetGrain<ITransferProbeGrain>(peer);
        string to = await target.SiloAsync(cancellationToken);
        using Frame frame = Frame.Create(frameBytes - 16);
        Random.Shared.NextBytes(frame.Section(0));
        await target.SinkAsync(new RingBlock(frame), cancellationToken); // warm-up: connection, buffers
        long started = Stopwatch.GetTimestamp();
        for (int i = 0; i < frames; i++)
        {
            await target.SinkAsync(new RingBlock(frame), cancellationToken);
        }

        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        for (int i = 0; i < Math.Min(calls, 100); i++)
        {
            await target.PingAsync(cancellationToken);
        }

        var latencies = new double[calls];
        for (int i = 0; i < calls; i++)
        {
            long call = Stopwatch.GetTimestamp();
            await target.PingAsync(cancellationToken);
            latencies[i] = Stopwatch.GetElapsedTime(call).TotalMicroseconds;
        }

        Array.Sort(latencies);
        return new TransferFigures(
            silo.SiloAddress.ToParsableString(), to, frames, frame.Length, seconds, (double)frames * frame.Length / seconds / 1e9, calls,
            latencies[calls / 2], latencies[Math.Min(calls - 1, (int)(calls * 0.99))]);
    }

    public Task SinkAsync(RingBlock block, CancellationToken cancellationToken)
    {
        block.Frame.Dispose();
        return Task.CompletedTask;
    }

    public Task PingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<string> SiloAsync(CancellationToken cancellationToken) => Task.FromResult(silo.SiloAddress.ToParsableString());
}
