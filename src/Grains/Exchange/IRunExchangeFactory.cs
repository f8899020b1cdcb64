namespace LongCluster.Grains.Exchange;

/// <summary>
/// Opens a rank's exchange for a run: the seam between the shard grain and the messaging (tests wrap it to fail or
/// stall sends on purpose).
/// </summary>
public interface IRunExchangeFactory
{
    /// <param name="keys">Grain key of every rank's shard (frames for rank i are delivered to shard <c>keys[i]</c>).</param>
    /// <param name="silos">The silo each rank runs on (a frame to a rank on this silo is handed over by reference).</param>
    IRunExchange Open(Guid run, int rank, IReadOnlyList<string> keys, IReadOnlyList<string> silos);

    /// <summary>Drops rank <paramref name="destination"/>'s mailboxes of <paramref name="run"/>: its waiting receives fail at once.</summary>
    void Close(Guid run, int destination);
}
