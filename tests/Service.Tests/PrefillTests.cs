using LongCluster.Client;
using LongCluster.Contracts;

namespace LongCluster.Service.Tests;

public sealed class PrefillTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    public static TheoryData<string, string, int> LayoutsAndMasks()
    {
        var data = new TheoryData<string, string, int>();
        foreach (string layout in new[] { "contiguous", "striped", "striped:4", "zigzag", "ulysses", "hybrid:2" })
        {
            foreach (string mask in new[] { "full", "causal", "window:9", "prefix:21", "document", "document-causal" })
            {
                data.Add(layout, mask, layout.StartsWith("hybrid", StringComparison.Ordinal) ? 4 : 3);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(LayoutsAndMasks))]
    public async Task Prefill_EveryLayoutAndMask_EqualsSingleNodeKernel(string layout, string mask, int shards)
    {
        // Hq = 12 and Hkv = 6 divide by the Ulysses degrees used (3, and 2 for hybrid:2 of 4 shards).
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 12, KeyValueHeads = 6, HeadDim = 16, Layout = layout, Mask = mask, Shards = shards };
        const int Tokens = 101;
        int[]? documents = mask.StartsWith("document", StringComparison.Ordinal) ? [.. Enumerable.Range(0, Tokens).Select(t => t / 30)] : null;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, Tokens, 100 * l)).ToArray();
        string id = $"p-{layout.Replace(':', '-')}-{mask.Replace(':', '-')}";
        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await fixture.Client.CreateAndPrefillAsync(
            spec, id, Tokens, (l, _) => Data.Input(spec, layers[l], 0, Tokens), documents);
        try
        {
            Assert.Equal(SequenceState.Ready, info.State);
            Assert.Equal(Tokens, info.Length);
            Assert.Equal(shards, info.ShardMap.Count);
            for (int l = 0; l < spec.Layers; l++)
            {
                (float[] o, float[] lse) = Data.Kernel(spec, layers[l], Tokens, documents);
                Data.Equal(o, outputs[l].Output, 1e-4, $"layer {l} O");
                Data.Equal(lse, outputs[l].LogSumExp, 1e-4, $"layer {l} LSE");
            }
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync(id);
        }
    }

    [Fact]
    public async Task StitchedOutput_AnySilo_EqualsWhatTheSdkStitched()
    {
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Layout = "striped:3", Mask = "causal", Shards = 3 };
        var layer = Data.Layer(spec, 50, 9);
        (_, IReadOnlyList<LayerOutput> outputs) = await fixture.Client.CreateAndPrefillAsync(spec, "stitched", 50, (_, _) => Data.Input(spec, layer, 0, 50));
        try
        {
            using var http = new HttpClient { BaseAddress = fixture.Cluster.Endpoints[2] };
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", fixture.Cluster.ApiToken);
            byte[] body = await http.GetByteArrayAsync(new Uri("v1/sequences/stitched/chunks/0/layers/0/output", UriKind.Relative));
            using Tensors.SafetensorsReader reader = Tensors.SafetensorsReader.FromBytes(body);
            Assert.Equal(outputs[0].Output, reader.Read("o").AsSpan<float>().ToArray());
            Assert.Equal(outputs[0].LogSumExp, reader.Read("lse").AsSpan<float>().ToArray());
            Assert.Equal([50L, 4L], reader.Read("lse").Shape);
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("stitched");
        }
    }

    [Fact]
    public async Task CreateSequence_ShardsSpreadOverSilos_OnePerSilo()
    {
        SequenceInfo info = await fixture.Client.CreateSequenceAsync(new SequenceSpec { QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 0 }, "spread");
        try
        {
            Assert.Equal(3, info.Shards);
            Assert.Equal(3, info.ShardMap.Select(s => s.Silo).Distinct().Count());
            Assert.Equal(3, info.ShardMap.Select(s => s.Endpoint).Distinct().Count());
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("spread");
        }
    }
}
