using System.Collections.Immutable;
using System.Net;
using LongCluster.Grains.Placement;

namespace LongCluster.Service.Tests;

/// <summary>The silos the spread director chooses among, without a cluster.</summary>
public sealed class SpreadPlacementTests
{
    private static SiloAddress Silo(int port) => SiloAddress.New(new IPEndPoint(IPAddress.Loopback, port), 1);

    [Fact]
    public void Candidates_ActiveMembersTheManifestDoesNotListYet_Included_GoneOnesNot_SortedByAddress()
    {
        var snapshot = new ClusterMembershipSnapshot(
            ImmutableDictionary.CreateRange(new[]
            {
                (Silo(11113), SiloStatus.Active), (Silo(11111), SiloStatus.Active), (Silo(11112), SiloStatus.Active),
                (Silo(11114), SiloStatus.Active), (Silo(11115), SiloStatus.Dead), (Silo(11116), SiloStatus.Joining),
            }.Select(m => KeyValuePair.Create(m.Item1, new ClusterMember(m.Item1, m.Item2, $"silo-{m.Item1.Endpoint.Port}")))),
            new MembershipVersion(7));

        // The manifest of the placing silo lists three of the four active silos, in no order, and one membership says is
        // dead; a silo membership has not heard of yet stays.
        SiloAddress[] candidates = SpreadPlacementDirector.Candidates([Silo(11113), Silo(11115), Silo(11111), Silo(11112), Silo(11117)], snapshot);

        Assert.Equal(["11111", "11112", "11113", "11114", "11117"], candidates.Select(s => s.Endpoint.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Fact]
    public void Candidates_ManifestAndMembershipAgree_TheSameSilosOnce()
    {
        var snapshot = new ClusterMembershipSnapshot(
            ImmutableDictionary.CreateRange(new[] { Silo(2), Silo(1) }.Select(s => KeyValuePair.Create(s, new ClusterMember(s, SiloStatus.Active, "s")))),
            new MembershipVersion(1));

        Assert.Equal([Silo(1), Silo(2)], SpreadPlacementDirector.Candidates([Silo(2), Silo(1)], snapshot));
    }
}
