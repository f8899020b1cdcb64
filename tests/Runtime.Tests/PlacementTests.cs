using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Placement;

namespace LongCluster.Runtime.Tests;

public sealed class PlacementTests
{
    private static readonly SiloAddress[] Silos = Enumerable.Range(0, 5).Select(i => new SiloAddress("10.0.0." + i, 11111, 42)).ToArray();

    private static readonly GrainId[] Grains = Enumerable.Range(0, 10000).Select(i => new GrainId("shard", "seq-" + i)).ToArray();

    [Fact]
    public void Owner_SameViewInAnyOrder_SameAnswerEverywhere()
    {
        var a = new ConsistentHashRing(Silos);
        var b = new ConsistentHashRing(Silos.Reverse());
        Assert.All(Grains, g => Assert.Equal(a.Owner(g), b.Owner(g)));
    }

    [Fact]
    public void Owner_Spread_EachSiloNearItsShare()
    {
        var ring = new ConsistentHashRing(Silos);
        var counts = Grains.GroupBy(ring.Owner).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(5, counts.Count);
        Assert.All(counts.Values, c => Assert.InRange(c, 1500, 2500));
    }

    [Fact]
    public void Owner_SiloJoins_OnlyGrainsMovingToItChangeOwner()
    {
        var before = new ConsistentHashRing(Silos);
        SiloAddress newcomer = new("10.0.0.9", 11111, 43);
        var after = new ConsistentHashRing([.. Silos, newcomer]);
        int moved = 0;
        foreach (GrainId grain in Grains)
        {
            SiloAddress old = before.Owner(grain);
            SiloAddress now = after.Owner(grain);
            if (old != now)
            {
                Assert.Equal(newcomer, now);
                moved++;
            }
        }

        Assert.InRange(moved, 1000, 2400);
    }

    [Fact]
    public void Hash_PinnedValues_StableAcrossRunsAndProcesses()
    {
        // Values from an independent implementation of FNV-1a 64 plus the avalanche step. A change here would
        // re-home every grain of a running cluster on upgrade.
        Assert.Equal(0xf6a714fd2ebcdb02UL, ConsistentHashRing.Hash("shard/seq-1"));
        Assert.Equal(0xefd01f60ba992926UL, ConsistentHashRing.Hash(string.Empty));
    }

    [Theory]
    [InlineData(8, 4)]
    [InlineData(6, 4)]
    [InlineData(3, 5)]
    [InlineData(16, 3)]
    public void Spread_PShardsOverNSilos_EvenAndStable(int shards, int silos)
    {
        SiloAddress[] active = Silos.Take(silos).ToArray();
        SiloAddress[] placed = Enumerable.Range(0, shards).Select(i => GrainPlacement.Spread(active, "sequence-7", i, shards)).ToArray();
        int[] perSilo = active.Select(s => placed.Count(p => p == s)).ToArray();
        Assert.Equal(shards, perSilo.Sum());
        Assert.True(perSilo.Max() - perSilo.Min() <= 1, string.Join(",", perSilo));
        Assert.Equal(placed, Enumerable.Range(0, shards).Select(i => GrainPlacement.Spread(active.Reverse().ToArray(), "sequence-7", i, shards)));
    }

    [Fact]
    public void Place_LocalAndHashAndEmptyView()
    {
        var ring = new ConsistentHashRing(Silos);
        GrainId grain = Grains[3];
        Assert.Equal(Silos[4], GrainPlacement.Place(PlacementStrategy.Local, grain, ring, Silos, Silos[4]));
        Assert.Equal(ring.Owner(grain), GrainPlacement.Place(PlacementStrategy.Hash, grain, ring, Silos, Silos[4]));
        Assert.Contains("no active silo", Assert.Throws<InvalidOperationException>(() => new ConsistentHashRing([]).Owner(grain)).Message);
    }
}
