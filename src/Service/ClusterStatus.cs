using LongCluster.Contracts;

namespace LongCluster.Service;

/// <summary>What the status page shows (and <c>GET /status.json</c> answers), gathered by one silo when asked.</summary>
/// <param name="ServedBy">Address of the silo that gathered it.</param>
/// <param name="Time">When it was gathered.</param>
/// <param name="MembershipVersion">Version of that silo's membership view the silo list comes from.</param>
/// <param name="Silos">Every silo in that view (dead ones too, as long as Orleans keeps them), by name, then address.</param>
/// <param name="Sequences">Every listed sequence as its coordinator describes it (state, length, layout, shard map), in id order.</param>
/// <param name="UnreachableSequences">Listed sequences whose coordinator did not answer, with why.</param>
public sealed record ClusterStatus(
    string ServedBy,
    DateTimeOffset Time,
    long MembershipVersion,
    IReadOnlyList<SiloView> Silos,
    IReadOnlyList<SequenceInfo> Sequences,
    IReadOnlyDictionary<string, string> UnreachableSequences);
