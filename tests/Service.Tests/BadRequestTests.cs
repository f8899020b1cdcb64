using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Tensors;

namespace LongCluster.Service.Tests;

/// <summary>Every bad request gets a 4xx naming the field, and the stored sequence answers correctly afterwards.</summary>
public sealed class BadRequestTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>, IAsyncLifetime
{
    private const string Id = "bad-requests";
    private const int Tokens = 60;
    private static readonly SequenceSpec Spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 3, Layout = "zigzag", Mask = "causal" };
    private readonly (float[] Q, float[] K, float[] V)[] _layers = [.. Enumerable.Range(0, 2).Select(l => Data.Layer(Spec, Tokens + 1, 50 + (10 * l)))];
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        _http = new HttpClient { BaseAddress = fixture.Cluster.Endpoints[1] };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", fixture.Cluster.ApiToken);
        await fixture.Client.CreateAndPrefillAsync(Spec, Id, Tokens, (l, _) => Data.Input(Spec, _layers[l], 0, Tokens));
    }

    public async Task DisposeAsync()
    {
        await fixture.Client.DeleteSequenceAsync(Id);
        _http.Dispose();
    }

    public static TheoryData<string, string, string, int, string?> JsonRequests() => new()
    {
        { "POST", "v1/sequences?id=x1", """{"queryHeads":5,"keyValueHeads":2,"headDim":8}""", 400, "queryHeads" },
        { "POST", "v1/sequences?id=x2", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"heads":3}""", 400, "heads" },
        { "POST", "v1/sequences?id=x3", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"dtype":"f64"}""", 400, "dtype" },
        { "POST", "v1/sequences?id=x4", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"mask":"sideways"}""", 400, "mask" },
        { "POST", "v1/sequences?id=x5", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"layout":"ulysses","shards":3}""", 400, "layout" },
        { "POST", "v1/sequences?id=x6", "not json", 400, null },
        { "POST", "v1/sequences?id=x7", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"layout":"auto","autoChunkTokens":-1}""", 400, "autoChunkTokens" },
        { "POST", "v1/sequences?id=x8", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"layout":"auto","mask":"sideways"}""", 400, "mask" },
        { "POST", "v1/sequences?id=x9", """{"queryHeads":4,"keyValueHeads":2,"headDim":8,"mask":"retrieval:topk=0"}""", 400, "mask" },
        { "POST", "v1/sequences?id=bad%2Fid", """{"queryHeads":4,"keyValueHeads":2,"headDim":8}""", 400, "id" },
        { "POST", $"v1/sequences?id={Id}", """{"queryHeads":4,"keyValueHeads":2,"headDim":8}""", 409, "id" },
        { "GET", "v1/sequences/nope", "", 404, "id" },
        { "POST", $"v1/sequences/{Id}/chunks", """{"tokens":0}""", 400, "tokens" },
        { "POST", $"v1/sequences/{Id}/chunks", """{"tokens":5,"documents":[1,2,3,4,5]}""", 400, "documents" },
        { "POST", $"v1/sequences/{Id}/chunks", """{"tokens":100000000}""", 429, "tokens" },
        { "POST", $"v1/sequences/{Id}/chunks/0/layers/5/run", "", 409, "chunk" },
        { "POST", $"v1/sequences/{Id}/chunks/7/layers/0/run", "", 409, "chunk" },
    };

    [Theory]
    [MemberData(nameof(JsonRequests))]
    public async Task JsonRequest_Invalid_RefusedWithField(string method, string path, string body, int status, string? field)
    {
        ApiError error = await SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = new StringContent(body, Encoding.UTF8, "application/json") }, status);
        if (field is not null)
        {
            Assert.Equal(field, error.Field);
        }

        Assert.False(error.Retryable);
        await AssertStillAnswersAsync();
    }

    [Theory]
    [InlineData("retrieval")]
    [InlineData("retrieval:block=64,topk=8")]
    public async Task CreateSequence_RetrievalMaskOnShards_RefusedWithTheReason(string mask)
    {
        string body = $$"""{"queryHeads":4,"keyValueHeads":2,"headDim":8,"shards":3,"mask":"{{mask}}"}""";
        ApiError error = await SendAsync(new HttpRequestMessage(HttpMethod.Post, "v1/sequences?id=retrieval") { Content = new StringContent(body, Encoding.UTF8, "application/json") }, 400);
        Assert.Equal("shards", error.Field);
        Assert.Contains("retrieval mask runs on one shard", error.Error, StringComparison.Ordinal);
        Assert.False(error.Retryable);
    }

    [Fact]
    public async Task Request_WithoutToken_Unauthorized()
    {
        using var anonymous = new HttpClient { BaseAddress = fixture.Cluster.Endpoints[0] };
        HttpResponseMessage response = await anonymous.GetAsync(new Uri($"v1/sequences/{Id}", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Authorization", JsonSerializer.Deserialize<ApiError>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!.Field);
    }

    public static TheoryData<string, string> BadUploads() => new()
    {
        { "wrong rows", "q" },
        { "wrong dtype", "q" },
        { "wrong head dim", "k" },
        { "non-finite", "v" },
        { "missing v", "v" },
        { "garbage", "body" },
    };

    [Theory]
    [MemberData(nameof(BadUploads))]
    public async Task Upload_Invalid_RefusedWithFieldAndNothingChanged(string what, string field)
    {
        ChunkPlan plan = await fixture.Client.BeginChunkAsync(Id, new ChunkRequest(6));
        ShardRows shard = plan.Shards[0];
        int rows = shard.Rows;
        var tensors = new Dictionary<string, HostTensor>
        {
            ["q"] = HostTensor.From<float>(new float[rows * 4 * 8], rows, 4, 8),
            ["k"] = HostTensor.From<float>(new float[rows * 2 * 8], rows, 2, 8),
            ["v"] = HostTensor.From<float>(new float[rows * 2 * 8], rows, 2, 8),
        };
        switch (what)
        {
            case "wrong rows": tensors["q"] = HostTensor.From<float>(new float[(rows + 1) * 4 * 8], rows + 1, 4, 8); break;
            case "wrong dtype": tensors["q"] = HostTensor.From<Half>(new Half[rows * 4 * 8], rows, 4, 8); break;
            case "wrong head dim": tensors["k"] = HostTensor.From<float>(new float[rows * 2 * 4], rows, 2, 4); break;
            case "non-finite":
                float[] v = new float[rows * 2 * 8];
                v[3] = float.NaN;
                tensors["v"] = HostTensor.From<float>(v, rows, 2, 8);
                break;
            case "missing v": tensors.Remove("v"); break;
        }

        byte[] body = what == "garbage" ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : SafetensorsWriter.ToBytes(tensors);
        using var request = new HttpRequestMessage(HttpMethod.Put, new Uri(new Uri(shard.Endpoint), $"v1/sequences/{Id}/chunks/{plan.Index}/layers/0/shards/0")) { Content = new ByteArrayContent(body) };
        ApiError error = await SendAsync(request, 400);
        Assert.Equal(field, error.Field);

        // The shard has no rows for the layer: running it is refused, and the chunk can still be finished properly.
        LongClusterException notUploaded = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.RunLayerAsync(Id, plan.Index, 0));
        Assert.True(notUploaded.Status == 409, $"expected 409, got {notUploaded.Status} {notUploaded.Code}: {notUploaded.Message}");
        await FinishChunkAsync(plan);
    }

    [Fact]
    public async Task Upload_OverBodyLimit_Refused413()
    {
        ChunkPlan plan = await fixture.Client.BeginChunkAsync(Id, new ChunkRequest(3));
        using var request = new HttpRequestMessage(HttpMethod.Put, new Uri(new Uri(plan.Shards[0].Endpoint), $"v1/sequences/{Id}/chunks/{plan.Index}/layers/0/shards/0"))
        {
            Content = new ByteArrayContent(new byte[fixture.Cluster.Options.MaxRequestBytes + 1]),
        };

        // Ask first, as the SDK does for large bodies: the silo refuses by the declared length and closes the
        // connection, so a client that sent the body regardless would see a broken pipe instead of the 413.
        request.Headers.ExpectContinue = true;
        ApiError error = await SendAsync(request, 413);
        Assert.Equal("body", error.Field);
        await FinishChunkAsync(plan);
    }

    [Fact]
    public async Task Decode_LayerOutOfOrderOrRange_Refused()
    {
        LayerInput row = Data.Input(Spec, _layers[1], Tokens, 1);
        LongClusterException order = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.DecodeAsync(Id, 1, row.Query, row.Key, row.Value));
        Assert.Equal((409, "layer"), (order.Status, order.Field));
        LongClusterException range = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.DecodeAsync(Id, 2, row.Query, row.Key, row.Value));
        Assert.Equal((400, "layer"), (range.Status, range.Field));
        LayerInput wide = Data.Input(Spec with { QueryHeads = 2 }, _layers[0], Tokens, 1);
        LongClusterException shape = await Assert.ThrowsAsync<LongClusterException>(() => fixture.Client.DecodeAsync(Id, 0, wide.Query, row.Key, row.Value));
        Assert.Equal((400, "q"), (shape.Status, shape.Field));
        await AssertStillAnswersAsync();
    }

    /// <summary>Uploads zero rows for every layer and runs them, so the sequence is ready again (its length grows).</summary>
    private async Task FinishChunkAsync(ChunkPlan plan)
    {
        for (int l = 0; l < Spec.Layers; l++)
        {
            var zero = new LayerInput(
                HostTensor.From<float>(new float[plan.Tokens * 32], plan.Tokens, 4, 8),
                HostTensor.From<float>(new float[plan.Tokens * 16], plan.Tokens, 2, 8),
                HostTensor.From<float>(new float[plan.Tokens * 16], plan.Tokens, 2, 8));
            await fixture.Client.PrefillLayerAsync(plan, l, zero, Spec);
        }
    }

    /// <summary>The stored sequence is intact: it is ready, and decoding token 60 through both layers equals the kernel over 61 tokens.</summary>
    private async Task AssertStillAnswersAsync()
    {
        SequenceInfo info = await fixture.Client.GetSequenceAsync(Id);
        Assert.Equal(SequenceState.Ready, info.State);
        Assert.Null(info.Problem);
        if (info.Length != Tokens)
        {
            return; // a test appended a chunk of zero rows; the probe below assumes the original length
        }

        for (int l = 0; l < Spec.Layers; l++)
        {
            LayerInput row = Data.Input(Spec, _layers[l], Tokens, 1);
            (float[] o, float[] lse) = Data.Kernel(Spec, _layers[l], Tokens + 1);
            DecodeOutput result = await fixture.Client.DecodeAsync(Id, l, row.Query, row.Key, row.Value);
            Data.Equal(o.AsSpan(Tokens * 32, 32), result.Output, 1e-4, $"layer {l} O after bad requests");
            Data.Equal(lse.AsSpan(Tokens * 4, 4), result.LogSumExp, 1e-4, $"layer {l} LSE after bad requests");
        }
    }

    private async Task<ApiError> SendAsync(HttpRequestMessage request, int status)
    {
        using (request)
        {
            HttpResponseMessage response = await _http.SendAsync(request);
            string text = await response.Content.ReadAsStringAsync();
            Assert.True((int)response.StatusCode == status, $"expected {status}, got {(int)response.StatusCode}: {text}");
            return JsonSerializer.Deserialize<ApiError>(text, JsonSerializerOptions.Web)!;
        }
    }
}
