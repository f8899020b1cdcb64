using LongCluster.Client;
using LongCluster.Grains;

namespace LongCluster.Service.Tests;

public sealed class LimitTests
{
    [Fact]
    public async Task Limits_SequencesAndResidentBytes_RefusedClearlyAndNothingChanged()
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(1, o =>
        {
            o.MaxSequences = 2;
            o.MaxResidentBytes = 64 * 1024;
        });
        using LongClusterClient client = cluster.NewClient(retries: 0);
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8 };
        var layer = Data.Layer(spec, 200, 1);
        var first33 = Data.Layer(spec, 33, 1);
        await client.CreateAndPrefillAsync(spec, "one", 32, (_, _) => Data.Input(spec, first33, 0, 32));
        await client.CreateSequenceAsync(spec, "two");

        LongClusterException third = await Assert.ThrowsAsync<LongClusterException>(() => client.CreateSequenceAsync(spec, "three"));
        Assert.Equal((429, "limit_exceeded", "shards"), (third.Status, third.Code, third.Field));
        Assert.Equal(2, (await client.ListSequencesAsync()).Count);

        // 200 tokens of q, k, v and their outputs do not fit in 64 KiB next to what "one" holds.
        ChunkPlan plan = await client.BeginChunkAsync("two", new ChunkRequest(200));
        LongClusterException big = await Assert.ThrowsAsync<LongClusterException>(() => client.UploadLayerAsync(plan, 0, Data.Input(spec, layer, 0, 200)));
        Assert.Equal((429, "q"), (big.Status, big.Field));
        Assert.Contains("may hold 65536", big.Message, StringComparison.Ordinal);

        // Nothing changed: "one" answers exactly, and after deleting it "three" fits.
        LayerInput row = Data.Input(spec, first33, 32, 1);
        (float[] o, float[] lse) = Data.Kernel(spec, first33, 33);
        DecodeOutput decoded = await client.DecodeAsync("one", 0, row.Query, row.Key, row.Value);
        Data.Equal(o.AsSpan(32 * 32, 32), decoded.Output, 1e-4, "O after refusals");
        Data.Equal(lse.AsSpan(32 * 4, 4), decoded.LogSumExp, 1e-4, "LSE after refusals");
        await client.DeleteSequenceAsync("one");
        await client.CreateSequenceAsync(spec, "three");
        Assert.Equal(["three", "two"], (await client.ListSequencesAsync()).Select(s => s.Id).Order());
    }
}
