using LongCluster.Client;
using LongCluster.Contracts;

namespace LongCluster.Service.Tests;

public sealed class ChunkDecodeTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Theory]
    [InlineData("zigzag", "causal", 3)]
    [InlineData("striped", "window:9", 3)]
    [InlineData("ulysses", "causal", 3)]
    [InlineData("hybrid:2", "causal", 4)]
    [InlineData("contiguous", "document-causal", 2)]
    public async Task ChunksThenDecode_EqualOneShotKernel(string layout, string mask, int shards)
    {
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 12, KeyValueHeads = 6, HeadDim = 16, Layout = layout, Mask = mask, Shards = shards };
        int[] chunks = [50, 1, 21];
        const int Decoded = 7;
        int tokens = chunks.Sum() + Decoded;
        int[]? documents = mask.StartsWith("document", StringComparison.Ordinal) ? [.. Enumerable.Range(0, tokens).Select(t => t < 51 ? 0 : 1)] : null;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, tokens, 7 + (100 * l))).ToArray();
        string id = $"cd-{layout.Replace(':', '-')}-{mask.Replace(':', '-')}";
        LongClusterClient client = fixture.Client;
        await client.CreateSequenceAsync(spec, id);
        try
        {
            await Data.PrefillThenDecodeEqualKernel(client, id, spec, layers, chunks, Decoded, documents);
            SequenceInfo info = await client.GetSequenceAsync(id);
            Assert.Equal(tokens, info.Length);
            Assert.Equal(SequenceState.Ready, info.State);
        }
        finally
        {
            await client.DeleteSequenceAsync(id);
        }
    }

    [Fact]
    public async Task Delete_FreesEveryByteOnEverySilo()
    {
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 3 };
        var layers = Enumerable.Range(0, 2).Select(l => Data.Layer(spec, 40, l)).ToArray();
        long[] before = Resident();
        await fixture.Client.CreateAndPrefillAsync(spec, "frees", 40, (l, _) => Data.Input(spec, layers[l], 0, 40));
        LayerInput row = Data.Input(spec, layers[0], 0, 1);
        await fixture.Client.DecodeAsync("frees", 0, row.Query, row.Key, row.Value);
        Assert.True(Resident().Sum() > before.Sum(), "a prefilled sequence holds bytes");
        await fixture.Client.DeleteSequenceAsync("frees");
        Assert.Equal(before, Resident());
        var missing = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.GetSequenceAsync("frees"));
        Assert.Equal(404, missing.Status);
    }

    private long[] Resident() => [.. fixture.Cluster.Silos.Select(s => s.Resources.ResidentBytes)];
}
