using LongCluster.Grains.Exchange;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Service.Tests;

/// <summary>What the faulty exchanges of a cluster do: <see cref="Fail"/>(source rank, destination rank) true fails that send.</summary>
public sealed class SendFaults
{
    public Func<int, int, bool>? Fail { get; set; }
}

/// <summary>Wraps a silo's exchange factory so tests can fail sends on purpose; production code has no hook for it.</summary>
internal sealed class FaultyExchangeFactory(IRunExchangeFactory inner, SendFaults faults) : IRunExchangeFactory
{
    public IRunExchange Open(Guid run, int rank, IReadOnlyList<string> keys, IReadOnlyList<string> silos) => new FaultyExchange(inner.Open(run, rank, keys, silos), faults);

    public void Close(Guid run, int destination) => inner.Close(run, destination);

    private sealed class FaultyExchange(IRunExchange inner, SendFaults faults) : IRunExchange
    {
        public int Rank => inner.Rank;

        public int Size => inner.Size;

        public long BytesSent => inner.BytesSent;

        public TimeSpan TransferTime => inner.TransferTime;

        public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken) =>
            faults.Fail?.Invoke(Rank, destination) == true
                ? throw new IOException($"send from rank {Rank} to rank {destination} failed (injected)")
                : inner.SendAsync(destination, frame, cancellationToken);

        public ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken) => inner.ReceiveAsync(source, cancellationToken);

        public Task CompleteAsync(CancellationToken cancellationToken) => inner.CompleteAsync(cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
