using System.Diagnostics;
using System.Threading.Channels;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Grains.Exchange;

/// <summary>
/// One rank's exchange over the cluster. A send to a rank on this silo hands over a reference; a send to another
/// silo is queued and delivered by a per-destination pump as a grain call, one at a time, so frames to one
/// destination keep their order and the rank goes on computing while its block is on the wire. A failed send fails
/// the rank's next send or <see cref="CompleteAsync"/>; the receiver's deadline covers frames that never arrive.
/// </summary>
internal sealed class ClusterExchange : IRunExchange
{
    private readonly ExchangeHub _hub;
    private readonly Guid _run;
    private readonly IReadOnlyList<string> _keys;
    private readonly IReadOnlyList<string> _silos;
    private readonly Channel<Frame>?[] _outgoing;
    private readonly Task?[] _pumps;
    private readonly CancellationTokenSource _stop = new();
    private Exception? _failure;
    private long _bytesSent;
    private long _transferTicks;

    internal ClusterExchange(ExchangeHub hub, Guid run, int rank, IReadOnlyList<string> keys, IReadOnlyList<string> silos)
    {
        if (keys.Count != silos.Count || rank < 0 || rank >= keys.Count)
        {
            throw new ArgumentException($"rank {rank} of {keys.Count} ranks ({silos.Count} silos named)", nameof(rank));
        }

        _hub = hub;
        _run = run;
        Rank = rank;
        _keys = keys;
        _silos = silos;
        _outgoing = new Channel<Frame>?[keys.Count];
        _pumps = new Task?[keys.Count];
    }

    public int Rank { get; }

    public int Size => _keys.Count;

    public long BytesSent => Interlocked.Read(ref _bytesSent);

    public TimeSpan TransferTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _transferTicks));

    public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(frame);
        cancellationToken.ThrowIfCancellationRequested();
        if (Volatile.Read(ref _failure) is { } failure)
        {
            throw new IOException($"an earlier send from rank {Rank} failed: {failure.Message}", failure);
        }

        if (_silos[destination] == _hub.Silo)
        {
            _hub.Deliver(_run, destination, Rank, frame.Retain());
            return ValueTask.CompletedTask;
        }

        Channel<Frame> queue = _outgoing[destination] ??= Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        _pumps[destination] ??= PumpAsync(destination, queue);
        if (!queue.Writer.TryWrite(frame.Retain()))
        {
            frame.Dispose();
            throw new InvalidOperationException($"rank {Rank}'s exchange is completed");
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask<Frame> ReceiveAsync(int source, CancellationToken cancellationToken) => _hub.ReceiveAsync(_run, Rank, source, cancellationToken);

    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        foreach (Channel<Frame>? queue in _outgoing)
        {
            queue?.Writer.TryComplete();
        }

        await Task.WhenAll(_pumps.Where(p => p is not null)!).WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_failure is { } failure)
        {
            throw new IOException($"rank {Rank} could not send a block: {failure.Message}", failure);
        }
    }

    /// <summary>Stops sending and drops what is still queued (a run that failed).</summary>
    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        foreach (Channel<Frame>? queue in _outgoing)
        {
            queue?.Writer.TryComplete();
        }

        foreach (Task? pump in _pumps)
        {
            if (pump is not null)
            {
                await pump.ConfigureAwait(false);
            }
        }

        _stop.Dispose();
    }

    private async Task PumpAsync(int destination, Channel<Frame> queue)
    {
        await Task.Yield();
        ISequenceShardGrain target = _hub.Grains.GetGrain<ISequenceShardGrain>(_keys[destination]);
        await foreach (Frame frame in queue.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
        {
            using (frame)
            {
                if (_failure is not null || _stop.IsCancellationRequested)
                {
                    continue;
                }

                long started = Stopwatch.GetTimestamp();
                try
                {
                    // The frame's bytes are serialized straight from its pooled buffer (RingBlockCodec); the call
                    // returns once the destination's silo has put them in its mailbox, so frames to one rank arrive in order.
                    await target.DeliverAsync(_run, Rank, new RingBlock(frame), _stop.Token).ConfigureAwait(false);
                    Interlocked.Add(ref _bytesSent, frame.Length);
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref _failure, e, null);
                }
                finally
                {
                    Interlocked.Add(ref _transferTicks, Stopwatch.GetTimestamp() - started);
                }
            }
        }
    }
}
