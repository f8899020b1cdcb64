using LongCluster.Client;
using LongCluster.Contracts;

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

    [Fact]
    public async Task Upload_OverRequestLimit_SdkGets413NotRetryable_NothingStored()
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(1, o => o.MaxRequestBytes = 96 * 1024);
        using LongClusterClient client = cluster.NewClient(retries: 3);
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8 };
        var layer = Data.Layer(spec, 1000, 3);
        await client.CreateSequenceAsync(spec, "big-body");

        // 1000 rows of q, k, v in f32 are 256,000 bytes: over the 98,304-byte limit, and sent only after the silo
        // agreed to take them, so the refusal comes back as itself instead of a broken connection.
        ChunkPlan plan = await client.BeginChunkAsync("big-body", new ChunkRequest(1000));
        LongClusterException refused = await Assert.ThrowsAsync<LongClusterException>(() => client.UploadLayerAsync(plan, 0, Data.Input(spec, layer, 0, 1000)));
        Assert.Equal((413, "body", false), (refused.Status, refused.Field, refused.IsRetryable));
        Assert.Contains("98304", refused.Message, StringComparison.Ordinal);

        LongClusterException notRun = await Assert.ThrowsAsync<LongClusterException>(() => client.RunLayerAsync("big-body", plan.Index, 0));
        Assert.Equal(409, notRun.Status);
        SequenceInfo info = await client.GetSequenceAsync("big-body");
        Assert.Equal(0, info.Length);
        Assert.All(info.ShardMap, s => Assert.Equal(0, s.ResidentBytes));
        await client.DeleteSequenceAsync("big-body");
        Assert.Empty(await client.ListSequencesAsync());
    }
}
