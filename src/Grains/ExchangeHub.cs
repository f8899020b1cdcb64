using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;

namespace LongCluster.Grains;

/// <summary>
/// The mailboxes of one silo for context-parallel runs: frames addressed to (run, destination rank, source rank).
/// Frames from another silo arrive as transport message frames and are read from the socket straight into a pooled
/// frame; frames between shards of the same silo are handed over by reference. A mailbox exists from the first frame
/// or receive, whichever comes first, until its run is closed; frames for a closed run are dropped.
/// </summary>
public sealed class ExchangeHub
{
    private const int HeadBytes = 24;
    private const int RememberedRuns = 4096;
    private const int AbortDestination = -1;
    private const int MaxAbortRanks = 4096;

    private readonly ConcurrentDictionary<(Guid Run, int Destination, int Source), Channel<Frame>> _boxes = new();
    private readonly ConcurrentDictionary<(Guid Run, int Destination), byte> _closed = new();
    private readonly ConcurrentQueue<(Guid Run, int Destination)> _closedOrder = new();
    private readonly SiloContext _silo;

    public ExchangeHub(SiloContext silo)
    {
        _silo = silo;
        silo.MessageHandler = ReceiveMessageAsync;
    }

    public SiloAddress Address => _silo.Address;

    /// <summary>Tests fail a send on purpose: called with (source rank, destination rank) before each send; true fails it.</summary>
    internal Func<int, int, bool>? FailSend { get; set; }

    /// <summary>Frames waiting in mailboxes (a test checks runs leave none behind).</summary>
    public int PendingFrames => _boxes.Values.Sum(b => b.Reader.Count);

    /// <summary>The exchange of rank <paramref name="rank"/> in run <paramref name="run"/>, whose ranks live on <paramref name="ranks"/>.</summary>
    public ClusterExchange Open(Guid run, int rank, IReadOnlyList<SiloAddress> ranks) => new(this, run, rank, ranks);

    /// <summary>
    /// Drops rank <paramref name="destination"/>'s mailboxes of a run and the frames still in them; later frames for it
    /// are dropped on arrival, and a receive fails at once.
    /// </summary>
    public void Close(Guid run, int destination)
    {
        if (_closed.TryAdd((run, destination), 0))
        {
            _closedOrder.Enqueue((run, destination));
            while (_closedOrder.Count > RememberedRuns && _closedOrder.TryDequeue(out var old))
            {
                _closed.TryRemove(old, out _);
            }
        }

        foreach (var key in _boxes.Keys.Where(k => k.Run == run && k.Destination == destination).ToArray())
        {
            if (_boxes.TryRemove(key, out Channel<Frame>? box))
            {
                box.Writer.TryComplete();
                while (box.Reader.TryRead(out Frame? frame))
                {
                    frame.Dispose();
                }
            }
        }
    }

    /// <summary>
    /// Aborts run <paramref name="run"/> (of <paramref name="ranks"/> ranks) on every silo in <paramref name="silos"/>:
    /// each closes the run's mailboxes, so its ranks' waiting receives fail at once. This reaches the ranks where
    /// they run, whatever membership now says about where their grains belong. Unreachable silos are skipped.
    /// </summary>
    public async Task AbortRunAsync(Guid run, int ranks, IEnumerable<SiloAddress> silos, TimeSpan timeout)
    {
        byte[] head = Head(run, AbortDestination, ranks);
        using var deadline = new CancellationTokenSource(timeout);
        await Task.WhenAll(silos.Distinct().Select(async silo =>
        {
            if (silo == Address)
            {
                CloseRun(run, ranks);
                return;
            }

            try
            {
                await _silo.SendMessageAsync(silo, head, ReadOnlyMemory<byte>.Empty, deadline.Token).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Best effort, like every clean-up after a failed run: a silo that cannot be reached runs nothing the
                // others wait for any more, and the grain aborts sent beside this one still reach the live ranks.
            }
        })).ConfigureAwait(false);
    }

    internal void Deliver(Guid run, int destination, int source, Frame frame)
    {
        if (_closed.ContainsKey((run, destination)) || !Box(run, destination, source).Writer.TryWrite(frame))
        {
            frame.Dispose();
        }
    }

    internal ValueTask<Frame> ReceiveAsync(Guid run, int destination, int source, CancellationToken cancellationToken) =>
        _closed.ContainsKey((run, destination))
            ? ValueTask.FromException<Frame>(new OperationCanceledException($"run {run} was aborted for rank {destination}"))
            : Box(run, destination, source).Reader.ReadAsync(cancellationToken);

    internal async Task SendRemoteAsync(SiloAddress silo, Guid run, int destination, int source, Frame frame, CancellationToken cancellationToken) =>
        await _silo.SendMessageAsync(silo, Head(run, destination, source), frame.Memory, cancellationToken).ConfigureAwait(false);

    /// <summary>A message's head: the run, the destination rank (<see cref="AbortDestination"/> for an abort) and the source rank (the rank count for an abort).</summary>
    private static byte[] Head(Guid run, int destination, int source)
    {
        byte[] head = new byte[HeadBytes];
        run.TryWriteBytes(head);
        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(16), destination);
        BinaryPrimitives.WriteInt32LittleEndian(head.AsSpan(20), source);
        return head;
    }

    private void CloseRun(Guid run, int ranks)
    {
        for (int rank = 0; rank < ranks; rank++)
        {
            Close(run, rank);
        }
    }

    private Channel<Frame> Box(Guid run, int destination, int source) =>
        _boxes.GetOrAdd((run, destination, source), static _ => Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true }));

    private async ValueTask ReceiveMessageAsync(Stream payload, long length, CancellationToken cancellationToken)
    {
        if (length < HeadBytes)
        {
            throw new InvalidDataException($"an exchange message of {length} bytes has no room for its {HeadBytes}-byte head");
        }

        byte[] head = new byte[HeadBytes];
        await payload.ReadExactlyAsync(head, cancellationToken).ConfigureAwait(false);
        var run = new Guid(head.AsSpan(0, 16));
        int destination = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(16));
        int source = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(20));
        if (destination == AbortDestination)
        {
            if (length != HeadBytes)
            {
                throw new InvalidDataException($"an exchange abort is {HeadBytes} bytes, got {length}");
            }

            CloseRun(run, Math.Clamp(source, 0, MaxAbortRanks));
            return;
        }

        Frame frame = await Frame.ReadAsync(payload, length - HeadBytes, cancellationToken).ConfigureAwait(false);
        Deliver(run, destination, source, frame);
    }
}

/// <summary>
/// One rank's <see cref="IExchange"/> over the cluster. A send to a rank on this silo hands over a reference; a send
/// to another silo is queued and written by a per-destination pump, so the rank goes on computing while its block is
/// on the wire (and frames to one destination keep their order). A failed send fails the rank's next send or
/// <see cref="CompleteAsync"/>; the receiver's deadline covers frames that never arrive.
/// </summary>
public sealed class ClusterExchange : IExchange, IAsyncDisposable
{
    private readonly ExchangeHub _hub;
    private readonly Guid _run;
    private readonly IReadOnlyList<SiloAddress> _ranks;
    private readonly Channel<Frame>?[] _outgoing;
    private readonly Task?[] _pumps;
    private readonly CancellationTokenSource _stop = new();
    private Exception? _failure;
    private long _bytesSent;
    private long _transferTicks;

    internal ClusterExchange(ExchangeHub hub, Guid run, int rank, IReadOnlyList<SiloAddress> ranks)
    {
        _hub = hub;
        _run = run;
        Rank = rank;
        _ranks = ranks;
        _outgoing = new Channel<Frame>?[ranks.Count];
        _pumps = new Task?[ranks.Count];
    }

    public int Rank { get; }

    public int Size => _ranks.Count;

    /// <summary>Bytes this rank put on the wire to other silos.</summary>
    public long BytesSent => Interlocked.Read(ref _bytesSent);

    /// <summary>Time its frames spent being written to other silos (in the background, overlapping compute).</summary>
    public TimeSpan TransferTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _transferTicks));

    public ValueTask SendAsync(int destination, Frame frame, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(frame);
        cancellationToken.ThrowIfCancellationRequested();
        if (Volatile.Read(ref _failure) is { } failure)
        {
            throw new IOException($"an earlier send from rank {Rank} failed: {failure.Message}", failure);
        }

        if (_hub.FailSend?.Invoke(Rank, destination) == true)
        {
            throw new IOException($"send from rank {Rank} to rank {destination} failed (injected)");
        }

        if (_ranks[destination] == _hub.Address)
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

    /// <summary>Waits until every queued frame is on the wire (or the run is aborted); throws the first send failure.</summary>
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
                    await _hub.SendRemoteAsync(_ranks[destination], _run, destination, Rank, frame, _stop.Token).ConfigureAwait(false);
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
