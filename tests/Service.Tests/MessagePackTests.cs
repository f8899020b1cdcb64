using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;

namespace LongCluster.Service.Tests;

/// <summary>Control messages in MessagePack where asked for, JSON otherwise, and every error in JSON.</summary>
public sealed class MessagePackTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>, IDisposable
{
    private static readonly SequenceSpec Spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 3, Layout = "zigzag", Mask = "causal" };

    private readonly HttpClient _http = Raw(fixture.Cluster.Endpoints[1], fixture.Cluster.ApiToken);

    public void Dispose() => _http.Dispose();

    [Fact]
    public async Task Prefill_SdkOverMessagePack_EqualsSingleNodeKernel()
    {
        const int Tokens = 70;
        var layers = Enumerable.Range(0, Spec.Layers).Select(l => Data.Layer(Spec, Tokens, 30 + l)).ToArray();
        var recorder = new RecordingHandler();
        using var http = new HttpClient(recorder);
        using var client = new LongClusterClient(http, new LongClusterClientOptions { Endpoints = fixture.Cluster.Endpoints, Token = fixture.Cluster.ApiToken });
        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(Spec, "mp-prefill", Tokens, (l, _) => Data.Input(Spec, layers[l], 0, Tokens));
        try
        {
            Assert.Equal(SequenceState.Ready, info.State);
            Assert.Equal(Tokens, info.Length);
            Data.EqualKernel(Spec, layers, outputs, Tokens, "over MessagePack");
            RecordingHandler.Exchange[] control = [.. recorder.Exchanges.Where(e => e.Control)];
            // create, describe, begin chunk, a run per layer, describe.
            Assert.Equal(4 + Spec.Layers, control.Length);
            Assert.All(control, e => Assert.Equal(ControlMessages.MessagePackType, e.AnswerType));
            Assert.All(control, e => Assert.Equal(ControlMessages.AcceptEither.Replace(" ", ""), e.Accept.Replace(" ", "")));
            Assert.All(control.Where(e => e.Method == "POST" && !e.Path.EndsWith("/run", StringComparison.Ordinal)), e => Assert.Equal(ControlMessages.MessagePackType, e.RequestType));
        }
        finally
        {
            await client.DeleteSequenceAsync("mp-prefill");
        }
    }

    [Theory]
    [InlineData("application/x-msgpack", "application/x-msgpack")]
    [InlineData("application/x-msgpack, application/json;q=0.9", "application/x-msgpack")]
    [InlineData("application/json, application/x-msgpack;q=0.5", "application/json")]
    [InlineData("application/x-msgpack;q=0.8, */*;q=0.9", "application/json")]
    [InlineData("application/x-msgpack;q=0", "application/json")]
    [InlineData("*/*", "application/json")]
    [InlineData(null, "application/json")]
    public async Task Describe_Accept_AnswersInTheFormatPreferred(string? accept, string expected)
    {
        SequenceInfo created = await fixture.Client.CreateSequenceAsync(Spec, "mp-describe");
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "v1/sequences/mp-describe");
            if (accept is not null)
            {
                request.Headers.Accept.ParseAdd(accept);
            }

            using HttpResponseMessage response = await _http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(expected, response.Content.Headers.ContentType?.MediaType);
            byte[] body = await response.Content.ReadAsByteArrayAsync();
            SequenceInfo info = expected == ControlMessages.MessagePackType
                ? ControlMessages.FromMessagePack<SequenceInfo>(body)
                : JsonSerializer.Deserialize<SequenceInfo>(body, JsonSerializerOptions.Web)!;
            Assert.Equal(JsonSerializer.Serialize(created, JsonSerializerOptions.Web), JsonSerializer.Serialize(info, JsonSerializerOptions.Web));
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("mp-describe");
        }
    }

    [Fact]
    public async Task Create_MessagePackBody_CreatesAndAnswersMessagePack()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/sequences?id=mp-create") { Content = MessagePack(ControlMessages.ToMessagePack(Spec)) };
        request.Headers.Accept.ParseAdd(ControlMessages.MessagePackType);
        using HttpResponseMessage response = await _http.SendAsync(request);
        try
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            Assert.Equal(ControlMessages.MessagePackType, response.Content.Headers.ContentType?.MediaType);
            SequenceInfo info = ControlMessages.FromMessagePack<SequenceInfo>(await response.Content.ReadAsByteArrayAsync());
            Assert.Equal("mp-create", info.Id);
            Assert.Equal(Spec, info.Spec);
            Assert.Equal(3, info.ShardMap.Count);
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("mp-create");
        }
    }

    [Fact]
    public async Task Error_AcceptMessagePack_AnswersJson()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/sequences/mp-none");
        request.Headers.Accept.ParseAdd(ControlMessages.MessagePackType);
        using HttpResponseMessage response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        ApiError error = JsonSerializer.Deserialize<ApiError>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!;
        Assert.Equal("not_found", error.Code);
        Assert.Equal("id", error.Field);
    }

    public static TheoryData<string, byte[], string> MalformedBodies() => new()
    {
        { "not MessagePack at all (0xc1 is never used)", [0xc1], "body" },
        { "empty", [], "body" },
        { "an array, not a map", ControlMessages.ToMessagePack(new[] { 1, 2 }), "body" },
        { "cut short", ControlMessages.ToMessagePack(Spec)[..20], "body" },
        { "bytes after the map", [.. ControlMessages.ToMessagePack(Spec), 0x01], "body" },
        { "a key the spec lacks (camelCase)", ControlMessages.ToMessagePack(new Dictionary<string, object> { ["layers"] = 2 }), "layers" },
        { "a string where an int goes", ControlMessages.ToMessagePack(new Dictionary<string, object> { ["QueryHeads"] = "four" }), "queryHeads" },
        { "an int where a string goes", ControlMessages.ToMessagePack(new Dictionary<string, object> { ["DType"] = 16 }), "dtype" },
    };

    [Theory]
    [MemberData(nameof(MalformedBodies))]
    public async Task Create_MalformedMessagePack_400NamingField(string what, byte[] body, string field)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/sequences?id=mp-malformed") { Content = MessagePack(body) };
        request.Headers.Accept.ParseAdd(ControlMessages.AcceptEither);
        using HttpResponseMessage response = await _http.SendAsync(request);
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{what}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        ApiError error = JsonSerializer.Deserialize<ApiError>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!;
        Assert.Equal(("invalid_request", field), (error.Code, error.Field));
        LongClusterException missing = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.GetSequenceAsync("mp-malformed"));
        Assert.Equal(404, missing.Status);
    }

    [Fact]
    public async Task BeginChunk_MessagePackDocuments_PlanAsJson()
    {
        await fixture.Client.CreateSequenceAsync(Spec with { Mask = "document-causal" }, "mp-chunk");
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "v1/sequences/mp-chunk/chunks") { Content = MessagePack(ControlMessages.ToMessagePack(new ChunkRequest(6, [0, 0, 0, 1, 1, 1]))) };
            using HttpResponseMessage response = await _http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            ChunkPlan plan = JsonSerializer.Deserialize<ChunkPlan>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!;
            Assert.Equal((0, 0L, 6), (plan.Index, plan.Start, plan.Tokens));
            Assert.Equal(6, plan.Shards.Sum(s => s.Rows));
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("mp-chunk");
        }
    }

    internal static HttpClient Raw(Uri endpoint, string token)
    {
        var http = new HttpClient { BaseAddress = endpoint };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    internal static ByteArrayContent MessagePack(byte[] body) => new(body) { Headers = { ContentType = new MediaTypeHeaderValue(ControlMessages.MessagePackType) } };
}
