using System.Threading.Channels;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// Ranks in one process: an unbounded channel per ordered pair of ranks. Sending hands over a reference to the
/// same pooled frame (no copy), so a block can be forwarded and computed on at once.
/// </summary>
public sealed class InProcessExchange : IDisposable
{
    private readonly Channel<Frame>[,] _channels;

    public InProcessExchange(int size)
    {
        if (size < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "size must be >= 1");
        }

        Size = size;
        _channels = new Channel<Frame>[size, size];
        for (int i = 0; i < size; i++)
        {
            for (int j = 0; j < size; j++)
            {
                _channels[i, j] = Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
            }
        }
    }

    public int Size { get; }

    public IExchange Rank(int rank)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rank);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(rank, Size);
        return new Endpoint(this, rank);
    }

    /// <summary>Releases frames that were sent but never received (a run that failed part-way).</summary>
    public void Dispose()
    {
        foreach (Channel<Frame> channel in _channels)
        {
            channel.Writer.TryComplete();
            while (channel.Reader.TryRead(out Frame? frame))
            {
                frame.Dispose();
            }
        }
    }

    private sealed class Endpoint(InProcessExchange owner, int rank) : IExchange
    {
        public int Rank => rank;

        public int Size => owner.Size;

        public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Frame reference = frame.Retain();
            if (!owner._channels[rank, destination].Writer.TryWrite(reference))
            {
                reference.Dispose();
                throw new InvalidOperationException($"rank {destination} no longer accepts frames from rank {rank}");
            }

            return ValueTask.CompletedTask;
        }

        public ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken) =>
            owner._channels[source, rank].Reader.ReadAsync(cancellationToken);
    }
}
