using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;

namespace LongCluster.Service.Tests;

/// <summary>A silo killed with memory grains of a retrieval sequence on it: the sequence turns degraded (as soon as it is described), never answers wrong.</summary>
public sealed class RetrievalFailureTests
{
    [Fact]
    public async Task SiloWithMemoryGrainsKilled_SequenceDegradedAndRefuses()
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(
            4, o => o.ReceiveTimeout = TimeSpan.FromSeconds(20), s => s.DetectFailuresFast());
        using LongClusterClient client = cluster.NewClient();
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Mask = "retrieval:block=8,repr=2,topk=3,init=4,local=16,chunk=12" };
        var layers = Enumerable.Range(0, 2).Select(l => RetrievalTests.Layer<float>(spec, 201, 40 + l, x => x)).ToArray();
        _ = await RetrievalTests.PrefillAsync(client, spec, "forgetful", layers, [200]);
        SequenceInfo info = await client.GetSequenceAsync("forgetful");
        // 21 evicted blocks over 4 parts per layer: every silo holds blocks of every layer.
        Assert.True(RetrievalRule.Parse(spec.Mask).EvictedBlocks(192, 24) >= 4 * 4);

        IReadOnlyList<LocalSilo> silos = cluster.Silos;
        int victim = Enumerable.Range(1, silos.Count - 1).First(i => silos[i].Address != info.Coordinator && info.ShardMap.All(s => s.Silo != silos[i].Address));
        SiloAddress dead = SiloAddress.FromParsableString(await cluster.KillAsync(victim));
        foreach (LocalSilo silo in cluster.Silos)
        {
            await silo.WaitForMembershipAsync(v => v.GetSiloStatus(dead) != SiloStatus.Active, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        }

        // Describing the sequence finds the lost blocks before any step needs them.
        using LongClusterClient survivor = cluster.NewClient(retries: 0);
        SequenceInfo after = await survivor.GetSequenceAsync("forgetful");
        Assert.Equal(SequenceState.Degraded, after.State);
        Assert.Contains("memory part", after.Problem, StringComparison.Ordinal);
        LayerInput row = RetrievalTests.Input(spec, layers[0], 200, 1);
        LongClusterException refused = await Assert.ThrowsAsync<LongClusterException>(() => survivor.DecodeAsync("forgetful", 0, row.Query, row.Key, row.Value));
        Assert.Equal((409, "degraded", false), (refused.Status, refused.Code, refused.IsRetryable));
        await survivor.DeleteSequenceAsync("forgetful");
    }
}
