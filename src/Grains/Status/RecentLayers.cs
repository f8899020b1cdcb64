using LongCluster.Contracts;

namespace LongCluster.Grains.Status;

/// <summary>
/// The last <see cref="Capacity"/> layer runs finished by the coordinators on this silo, for the status page. An
/// immutable array swapped by compare-and-swap: coordinators add from their own activations at once, readers never lock.
/// </summary>
public sealed class RecentLayers(TimeProvider time)
{
    /// <summary>Runs kept: enough to see a few layers of the sequences in flight, small enough to send on every refresh.</summary>
    public const int Capacity = 20;

    private LayerTiming[] _runs = [];

    /// <summary>The kept runs, oldest first.</summary>
    public IReadOnlyList<LayerTiming> Snapshot => Volatile.Read(ref _runs);

    public void Add(string sequenceId, int chunk, int layer, double seconds, IReadOnlyList<ShardTimings> shards)
    {
        var run = new LayerTiming(time.GetUtcNow(), sequenceId, chunk, layer, seconds, shards);
        LayerTiming[] seen = Volatile.Read(ref _runs);
        while (true)
        {
            LayerTiming[] next = [.. seen.Skip(Math.Max(0, seen.Length + 1 - Capacity)), run];
            LayerTiming[] found = Interlocked.CompareExchange(ref _runs, next, seen);
            if (ReferenceEquals(found, seen))
            {
                return;
            }

            seen = found;
        }
    }
}
