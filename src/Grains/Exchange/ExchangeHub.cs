using System.Collections.Concurrent;
using System.Threading.Channels;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Grains.Exchange;

/// <summary>
/// The mailboxes of one silo for context-parallel runs: frames addressed to (run, destination rank, source rank).
/// A frame between ranks on this silo is handed over by reference; a frame for a rank on another silo travels as a
/// grain call to that rank's shard (<see cref="ISequenceShardGrain.DeliverAsync"/>), which puts it in its silo's
/// mailbox. A mailbox exists from the first frame or receive, whichever comes first, until its run is closed;
/// frames for a closed run are dropped.
/// </summary>
public sealed class ExchangeHub(IGrainFactory grains, ILocalSiloDetails silo) : IRunExchangeFactory
{
    private const int RememberedRuns = 4096;

    private readonly ConcurrentDictionary<(Guid Run, int Destination, int Source), Channel<Frame>> _boxes = new();
    private readonly ConcurrentDictionary<(Guid Run, int Destination), byte> _closed = new();
    private readonly ConcurrentQueue<(Guid Run, int Destination)> _closedOrder = new();

    /// <summary>This silo, as <see cref="ShardRun.Silos"/> names it.</summary>
    public string Silo { get; } = silo.SiloAddress.ToParsableString();

    internal IGrainFactory Grains => grains;

    /// <summary>Frames waiting in mailboxes (a test checks runs leave none behind).</summary>
    public int PendingFrames => _boxes.Values.Sum(b => b.Reader.Count);

    public IRunExchange Open(Guid run, int rank, IReadOnlyList<string> keys, IReadOnlyList<string> silos) => new ClusterExchange(this, run, rank, keys, silos);

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

    /// <summary>Puts a frame in a mailbox of this silo; the hub takes over the caller's reference.</summary>
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

    private Channel<Frame> Box(Guid run, int destination, int source) =>
        _boxes.GetOrAdd((run, destination, source), static _ => Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true }));
}
