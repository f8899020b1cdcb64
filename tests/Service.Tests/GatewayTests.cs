using System.Net;
using System.Net.Sockets;
using LongCluster.Client;
using LongCluster.Contracts;

namespace LongCluster.Service.Tests;

/// <summary>The SDK's gateways: one that refuses connections is passed over without costing a retry.</summary>
public sealed class GatewayTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task DeadGatewayInTheList_EveryRequestAnswered_NoRetrySpent()
    {
        (Uri dead, int port) = RefusingEndpoint();

        var retries = new List<RetryNotice>();
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = [dead, fixture.Cluster.Endpoints[0], dead, fixture.Cluster.Endpoints[1]],
            Token = fixture.Cluster.ApiToken,
            MaxRetries = 0,
            OnRetry = retries.Add,
        });
        for (int i = 0; i < 12; i++)
        {
            Assert.NotNull(await client.ListSequencesAsync());
        }

        Assert.Empty(retries);

        // With no live gateway, the refusal comes back as a retryable "unavailable" naming the endpoint.
        using var none = new LongClusterClient(new LongClusterClientOptions { Endpoints = [dead], Token = fixture.Cluster.ApiToken, MaxRetries = 0 });
        LongClusterException refused = await Assert.ThrowsAsync<LongClusterException>(() => none.ListSequencesAsync());
        Assert.Equal((0, "unavailable", true), (refused.Status, refused.Code, refused.IsRetryable));
        Assert.Contains($"127.0.0.1:{port}", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ShardSiloRefuses_UploadAndReadGoThroughAGateway_ResultsExact()
    {
        (Uri dead, _) = RefusingEndpoint();
        var retries = new List<RetryNotice>();
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = fixture.Cluster.Endpoints,
            Token = fixture.Cluster.ApiToken,
            MaxRetries = 0,
            OnRetry = retries.Add,
        });
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 3, Layout = "zigzag", Mask = "causal" };
        var layer = Data.Layer(spec, 48, 5);
        await client.CreateSequenceAsync(spec, "via-gateway");
        try
        {
            // The plan names a silo for every shard; here every one of them refuses, so each upload and read must be
            // routed by a gateway instead.
            ChunkPlan plan = await client.BeginChunkAsync("via-gateway", new ChunkRequest(48));
            ChunkPlan unreachable = plan with { Shards = [.. plan.Shards.Select(s => s with { Endpoint = dead.ToString() })] };
            LayerOutput output = await client.PrefillLayerAsync(unreachable, 0, Data.Input(spec, layer, 0, 48), spec);
            (float[] o, float[] lse) = Data.Kernel(spec, layer, 48);
            Data.Equal(o, output.Output, 1e-4, "O read through a gateway");
            Data.Equal(lse, output.LogSumExp, 1e-4, "LSE read through a gateway");
            Assert.Empty(retries);
        }
        finally
        {
            await client.DeleteSequenceAsync("via-gateway");
        }
    }

    /// <summary>A port that was just free: connecting to it is refused.</summary>
    private static (Uri Endpoint, int Port) RefusingEndpoint()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return (new Uri($"http://127.0.0.1:{port}/"), port);
    }
}
