using System.Net;
using System.Text;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Tensors;
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
}
