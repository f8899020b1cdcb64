using System.Net;
using System.Text;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Tensors;
using LongCluster.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service.Tests;

/// <summary>The SDK's retry pipeline and its HttpClient seams, against a scripted handler (no cluster).</summary>
public sealed class ClientPipelineTests
{
    private static readonly Uri GatewayA = new("http://gateway-a:8080/");
    private static readonly Uri GatewayB = new("http://gateway-b:8080/");

    [Fact]
    public async Task CallersHttpClient_RetryableAnswers_RetriedWithDoublingDelaysOnTheNextGateway()
    {
        var handler = new ScriptedHandler(Busy, Busy, Empty);
        using var http = new HttpClient(handler);
        var retries = new List<RetryNotice>();
        using (var client = new LongClusterClient(http, Options(retries, maxRetries: 3)))
        {
            Assert.Empty(await client.ListSequencesAsync());
        }

        Assert.Equal(["gateway-b", "gateway-a", "gateway-b"], handler.Hosts);
        Assert.All(handler.Tokens, t => Assert.Equal("Bearer secret", t));
        Assert.Equal(
            [("GET v1/sequences", 1, TimeSpan.FromMilliseconds(1), 503), ("GET v1/sequences", 2, TimeSpan.FromMilliseconds(2), 503)],
            retries.Select(r => (r.What, r.Attempt, r.Delay, r.Failure.Status)));

        // The caller's client outlives the SDK client.
        using var again = new LongClusterClient(http, Options([], maxRetries: 0));
        Assert.Empty(await again.ListSequencesAsync());
    }

    [Fact]
    public async Task RetriesSpent_LastFailureThrown()
    {
        var handler = new ScriptedHandler(Busy, Busy, Busy);
        using var http = new HttpClient(handler);
        var retries = new List<RetryNotice>();
        using var client = new LongClusterClient(http, Options(retries, maxRetries: 2));
        LongClusterException e = await Assert.ThrowsAsync<LongClusterException>(() => client.ListSequencesAsync());
        Assert.Equal((503, "unavailable", true, 3, 2), (e.Status, e.Code, e.IsRetryable, handler.Hosts.Count, retries.Count));
    }

    [Fact]
    public async Task NotRetryable_ThrownAtOnce()
    {
        var handler = new ScriptedHandler(_ => Answer(HttpStatusCode.BadRequest, """{"error":"no","field":"tokens","retryable":false,"code":"invalid_request"}"""));
        using var http = new HttpClient(handler);
        var retries = new List<RetryNotice>();
        using var client = new LongClusterClient(http, Options(retries, maxRetries: 3));
        LongClusterException e = await Assert.ThrowsAsync<LongClusterException>(() => client.ListSequencesAsync());
        Assert.Equal((400, "invalid_request", "tokens", false, 1), (e.Status, e.Code, e.Field, e.IsRetryable, handler.Hosts.Count));
        Assert.Empty(retries);
    }

    [Fact]
    public async Task AddLongClusterClient_ResolvesATypedClientOverTheFactory()
    {
        var handler = new ScriptedHandler(Busy, Empty);
        var retries = new List<RetryNotice>();
        var services = new ServiceCollection();
        services.AddLongClusterClient(o =>
        {
            o.Endpoints = [GatewayA];
            o.Token = "secret";
            o.RetryDelay = TimeSpan.Zero;
            o.OnRetry = retries.Add;
        }).ConfigurePrimaryHttpMessageHandler(() => handler);
        await using ServiceProvider provider = services.BuildServiceProvider();
        LongClusterClient client = provider.GetRequiredService<LongClusterClient>();
        Assert.Empty(await client.ListSequencesAsync());
        Assert.Equal(["gateway-a", "gateway-a"], handler.Hosts);
        Assert.Equal([1], retries.Select(r => r.Attempt));
    }

    [Fact]
    public async Task Decode_SentFirstToTheSilo_OfTheSequencesCoordinator()
    {
        var info = new SequenceInfo("s", new SequenceSpec { QueryHeads = 1, KeyValueHeads = 1, HeadDim = 2 }, SequenceState.Ready, 5, 1, [], null, 0, null, "10.0.0.9:11111@1", "http://coordinator-silo:8080");
        byte[] decoded = SafetensorsWriter.ToBytes(
            new Dictionary<string, HostTensor> { ["o"] = HostTensor.From<float>([1f, 2f], 1, 1, 2), ["lse"] = HostTensor.From<float>([0.5f], 1, 1) },
            new Dictionary<string, string> { ["position"] = "5" });
        var handler = new ScriptedHandler(
            _ => Answer(HttpStatusCode.OK, JsonSerializer.Serialize(info, new JsonSerializerOptions(JsonSerializerDefaults.Web))),
            _ => new HttpResponseMessage(HttpStatusCode.OK) { Content = new ByteArrayContent(decoded) });
        using var http = new HttpClient(handler);
        using var client = new LongClusterClient(http, Options([], maxRetries: 0));
        await client.GetSequenceAsync("s");
        DecodeOutput output = await client.DecodeAsync("s", 0, HostTensor.From<float>([1f, 1f], 1, 1, 2), HostTensor.From<float>([1f, 1f], 1, 1, 2), HostTensor.From<float>([1f, 1f], 1, 1, 2));
        Assert.Equal(5, output.Position);
        Assert.Equal("coordinator-silo", handler.Hosts[^1]);
    }

    [Fact]
    public async Task UploadLayer_WritesEachShardsRowsInItsOrder_ShortRunsGatheredAndLongOnesAsTheyLie()
    {
        // Rows of 4 KiB (Q) and 2 KiB (K, V): shard 0 gets every even token below 300 as runs of one (gathered before
        // they are written), then tokens 300..599 as one run of 1.2 MB of Q (written as it lies); shard 1 the odd tokens.
        (ChunkPlan plan, LayerInput input) = StripedPlan();
        var bodies = new System.Collections.Concurrent.ConcurrentDictionary<string, byte[]>();
        var handler = new AsyncScriptedHandler(async request =>
        {
            bodies[request.RequestUri!.AbsolutePath] = await request.Content!.ReadAsByteArrayAsync();
            Assert.Equal(bodies[request.RequestUri!.AbsolutePath].Length, request.Content.Headers.ContentLength);
            return new HttpResponseMessage(HttpStatusCode.NoContent);
        });
        using var http = new HttpClient(handler);
        using var client = new LongClusterClient(http, Options([], maxRetries: 0));
        await client.UploadLayerAsync(plan, 0, input);

        Assert.Equal(2, bodies.Count);
        foreach (ShardRows shard in plan.Shards)
        {
            using SafetensorsReader reader = SafetensorsReader.FromBytes(bodies[$"/v1/sequences/s/chunks/0/layers/0/shards/{shard.Index}"]);
            foreach ((string name, HostTensor tensor) in new[] { ("q", input.Query), ("k", input.Key), ("v", input.Value) })
            {
                HostTensor rows = reader.Read(name);
                Assert.Equal([shard.Rows, tensor.Shape[1], tensor.Shape[2]], rows.Shape);
                int row = (int)(tensor.Shape[1] * tensor.Shape[2]);
                float[] expected = [.. TokensOf(shard).SelectMany(t => tensor.AsSpan<float>().Slice(t * row, row).ToArray())];
                Assert.Equal(expected, rows.AsSpan<float>().ToArray());
            }
        }
    }

    [Fact]
    public async Task ReadOutput_ABodyThatBreaksOff_IsReadAgain_AndEveryRowLandsInTokenOrder()
    {
        (ChunkPlan plan, _) = StripedPlan();
        var spec = new SequenceSpec { QueryHeads = 2, KeyValueHeads = 1, HeadDim = 512 };
        int rowO = spec.QueryHeads * spec.HeadDim;
        float[] expectedO = Data.Random(11, (long)plan.Tokens * rowO);
        float[] expectedL = Data.Random(12, (long)plan.Tokens * spec.QueryHeads);
        var reads = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var handler = new AsyncScriptedHandler(request =>
        {
            int index = int.Parse(request.RequestUri!.Segments[^2].TrimEnd('/'), System.Globalization.CultureInfo.InvariantCulture);
            ShardRows shard = plan.Shards[index];
            int[] tokens = TokensOf(shard);
            byte[] body = SafetensorsWriter.ToBytes(new Dictionary<string, HostTensor>
            {
                ["o"] = HostTensor.From<float>([.. tokens.SelectMany(t => expectedO.AsSpan(t * rowO, rowO).ToArray())], shard.Rows, spec.QueryHeads, spec.HeadDim),
                ["lse"] = HostTensor.From<float>([.. tokens.SelectMany(t => expectedL.AsSpan(t * spec.QueryHeads, spec.QueryHeads).ToArray())], shard.Rows, spec.QueryHeads),
            });
            // Shard 0's first answer breaks off two thirds of the way through its rows.
            bool breaks = reads.AddOrUpdate(index, 1, (_, n) => n + 1) == 1 && index == 0;
            var content = new StreamContent(new PiecewiseStream(body, 64 * 1024, breaks ? body.Length * 2 / 3 : int.MaxValue));
            content.Headers.ContentLength = body.Length;
            return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = content });
        });
        using var http = new HttpClient(handler);
        var retries = new List<RetryNotice>();
        using var client = new LongClusterClient(http, Options(retries, maxRetries: 2));
        (float[] output, float[] lse) = await client.ReadOutputAsync(plan, 0, spec);

        Assert.Equal(expectedO, output);
        Assert.Equal(expectedL, lse);
        Assert.Equal((2, 1), (reads[0], reads[1]));
        Assert.Single(retries);
        Assert.Contains("did not answer", retries[0].Failure.Message);
    }

    /// <summary>600 tokens over two shards: shard 0 the even tokens below 300 (runs of one), then 300..599 in one run; shard 1 the odd tokens below 300.</summary>
    private static (ChunkPlan Plan, LayerInput Input) StripedPlan()
    {
        int[] evens = [.. Enumerable.Range(0, 150).SelectMany(i => new[] { 2 * i, 1 }), 300, 300];
        int[] odds = [.. Enumerable.Range(0, 150).SelectMany(i => new[] { (2 * i) + 1, 1 })];
        var plan = new ChunkPlan("s", 0, 0, 600, [new ShardRows(0, "http://silo-0:8080", 450, evens), new ShardRows(1, "http://silo-1:8080", 150, odds)]);
        var input = new LayerInput(
            HostTensor.From<float>(Data.Random(1, 600 * 2 * 512), 600, 2, 512),
            HostTensor.From<float>(Data.Random(2, 600 * 512), 600, 1, 512),
            HostTensor.From<float>(Data.Random(3, 600 * 512), 600, 1, 512));
        return (plan, input);
    }

    /// <summary>The chunk's token offsets a shard holds, in its order.</summary>
    private static int[] TokensOf(ShardRows shard) =>
        [.. Enumerable.Range(0, shard.Runs.Length / 2).SelectMany(r => Enumerable.Range(shard.Runs[2 * r], shard.Runs[(2 * r) + 1]))];

    private static LongClusterClientOptions Options(List<RetryNotice> retries, int maxRetries) => new()
    {
        Endpoints = [GatewayA, GatewayB],
        Token = "secret",
        MaxRetries = maxRetries,
        RetryDelay = TimeSpan.FromMilliseconds(1),
        OnRetry = retries.Add,
    };

    private static HttpResponseMessage Busy(HttpRequestMessage request) =>
        Answer(HttpStatusCode.ServiceUnavailable, """{"error":"busy","field":null,"retryable":true,"code":"unavailable"}""");

    private static HttpResponseMessage Empty(HttpRequestMessage request) => Answer(HttpStatusCode.OK, "[]");

    private static HttpResponseMessage Answer(HttpStatusCode status, string json) =>
        new(status) { Content = new StringContent(json, Encoding.UTF8, "application/json") };

    /// <summary>Answers the n-th request with the n-th script (the last one from then on), and records what it was sent.</summary>
    private sealed class ScriptedHandler(params Func<HttpRequestMessage, HttpResponseMessage>[] script) : HttpMessageHandler
    {
        public List<string> Hosts { get; } = [];

        public List<string?> Tokens { get; } = [];

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            lock (Hosts)
            {
                Hosts.Add(request.RequestUri!.Host);
                Tokens.Add(request.Headers.Authorization?.ToString());
                return Task.FromResult(script[Math.Min(Hosts.Count - 1, script.Length - 1)](request));
            }
        }
    }

    /// <summary>Answers every request with what <paramref name="answer"/> makes of it, concurrently.</summary>
    private sealed class AsyncScriptedHandler(Func<HttpRequestMessage, Task<HttpResponseMessage>> answer) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) => answer(request);
    }
}
