using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;

namespace LongCluster.Service.Tests;

public sealed class LayoutAutoTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task CreateSequence_AutoCausalOnOneShard_TieGoesToZigzag()
    {
        // One shard: every layout is the same computation, a tie; causal masks break it toward the balanced layout.
        var spec = new SequenceSpec { QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Layout = "auto", Mask = "causal", Shards = 1, AutoChunkTokens = 4096 };
        SequenceInfo info = await fixture.Client.CreateSequenceAsync(spec, "auto-causal-1");
        try
        {
            Assert.Equal("zigzag", info.LayoutChosen);
            Assert.Equal("zigzag", info.Spec.Layout);
            Assert.Equal(4096, info.Spec.AutoChunkTokens);
            // A local cluster's silos plan with the profile of silos sharing one host.
            Assert.Equal("this-machine", fixture.Cluster.Options.CostProfile);
            LayerPrediction expected = LayerCostModel.Predict(new LayoutPlan(ContextLayout.Zigzag, 1, 4096, 4, 2), AttentionMask.Causal, 8, 4, HardwareProfile.Load("this-machine"));
            Assert.Equal(Math.Round(expected.LayerMs, 3), info.PredictedLayerMs);
            Assert.Equal(info.LayoutChosen, (await fixture.Client.GetSequenceAsync("auto-causal-1")).LayoutChosen);
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("auto-causal-1");
        }
    }

    [Fact]
    public async Task Prefill_AutoFullOnThreeShards_ContiguousChosenAndExact()
    {
        // Full mask: contiguous, zigzag and striped have the same pairs and blocks, a tie that goes to contiguous; the
        // chunk length defaults to DefaultAutoChunkTokens. The chosen layout then prefills exactly.
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Layout = "auto", Mask = "full", Shards = 3 };
        const int Tokens = 60;
        var layer = Data.Layer(spec, Tokens, 5);
        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await fixture.Client.CreateAndPrefillAsync(spec, "auto-full-3", Tokens, (_, _) => Data.Input(spec, layer, 0, Tokens));
        try
        {
            Assert.Equal("contiguous", info.LayoutChosen);
            Assert.Equal("contiguous", info.Spec.Layout);
            Assert.Equal(SequenceSpec.DefaultAutoChunkTokens, info.Spec.AutoChunkTokens);
            LayoutChoice choice = LayoutPlanner.Choose(3, new ChunkShape(SequenceSpec.DefaultAutoChunkTokens, 4, 2, 8, 4, AttentionMask.Full), HardwareProfile.Load("this-machine"));
            Assert.Equal(Math.Round(choice.Prediction.LayerMs, 3), info.PredictedLayerMs);
            (float[] o, float[] lse) = Data.Kernel(spec with { Layout = "contiguous" }, layer, Tokens);
            Data.Equal(o, outputs[0].Output, 1e-4, "O");
            Data.Equal(lse, outputs[0].LogSumExp, 1e-4, "LSE");
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("auto-full-3");
        }
    }

    [Fact]
    public void Validate_BadCostProfile_NamesTheSetting()
    {
        var options = new AttentionServiceOptions { ApiToken = "a token of sixteen chars", CostProfile = "no-such-profile" };
        ArgumentException e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.StartsWith("CostProfile: profile no-such-profile: no such file, and not a built-in profile (built in: ", e.Message, StringComparison.Ordinal);
        Assert.Equal("cpu-node", new AttentionServiceOptions().LoadCostProfile().Name);
    }

    [Fact]
    public async Task CreateSequence_FixedLayout_NoChoiceReported()
    {
        SequenceInfo info = await fixture.Client.CreateSequenceAsync(new SequenceSpec { QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Layout = "striped", Shards = 2 }, "auto-fixed");
        try
        {
            Assert.Null(info.LayoutChosen);
            Assert.Null(info.PredictedLayerMs);
            Assert.Equal("striped", info.Spec.Layout);
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("auto-fixed");
        }
    }
}
