using System.Net;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service.Tests;

/// <summary>A silo with MessagePack off (<c>LongCluster:Service:MessagePack=false</c>): JSON only, and the SDK falls back to it.</summary>
public sealed class JsonOnlySiloTests : IAsyncLifetime
{
    private static readonly SequenceSpec Spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 1, Layout = "contiguous", Mask = "causal" };

    private LocalAttentionCluster _cluster = null!;

    public async Task InitializeAsync() => _cluster = await LocalAttentionCluster.StartAsync(1, o => o.MessagePack = false);

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task Prefill_AutoAgainstJsonOnlySilo_FallsBackToJsonWithoutRetry()
    {
        const int Tokens = 40;
        var layers = Enumerable.Range(0, Spec.Layers).Select(l => Data.Layer(Spec, Tokens, 70 + l)).ToArray();
        var recorder = new RecordingHandler();
        var retries = new List<RetryNotice>();
        using var http = new HttpClient(recorder);
        using var client = new LongClusterClient(http, new LongClusterClientOptions
        {
            Endpoints = _cluster.Endpoints, Token = _cluster.ApiToken, ControlFormat = ControlFormat.Auto, OnRetry = retries.Add,
        });

        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(Spec, "json-only", Tokens, (l, _) => Data.Input(Spec, layers[l], 0, Tokens));

        Assert.Equal((SequenceState.Ready, (long)Tokens), (info.State, info.Length));
        Data.EqualKernel(Spec, layers, outputs, Tokens, "through a JSON-only silo");
        Assert.Empty(retries);
        RecordingHandler.Exchange[] bodies = [.. recorder.Exchanges.Where(e => e.Control && e.RequestType is not null)];
        // The first body went as MessagePack and was refused; the same create went again as JSON, and JSON from then on.
        Assert.Equal(
            [(ControlMessages.MessagePackType, 415), ("application/json", 201), ("application/json", 200)],
            bodies.Select(e => (e.RequestType!, e.Status)));
        Assert.All(recorder.Exchanges.Where(e => e.Control && e.Status < 300), e => Assert.Equal("application/json", e.AnswerType));
        await client.DeleteSequenceAsync("json-only");
    }

    [Theory]
    [InlineData(null, true)]
    [InlineData("false", false)]
    public async Task Build_MessagePackSetting_BoundFromConfiguration(string? value, bool expected)
    {
        string[] args = ["--LongCluster:Service:ApiToken=a configuration test token", "--LongCluster:HttpPort=0", .. value is null ? Array.Empty<string>() : [$"--LongCluster:Service:MessagePack={value}"]];
        await using WebApplication app = SiloHost.Build(args);
        Assert.Equal(expected, app.Services.GetRequiredService<AttentionServiceOptions>().MessagePack);
    }

    [Fact]
    public async Task Create_MessagePackBody_415NamingContentType()
    {
        using HttpClient http = MessagePackTests.Raw(_cluster.Endpoints[0], _cluster.ApiToken);
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/sequences?id=refused") { Content = MessagePackTests.MessagePack(ControlMessages.ToMessagePack(Spec)) };
        request.Headers.Accept.ParseAdd(ControlMessages.AcceptEither);
        using HttpResponseMessage response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        ApiError error = JsonSerializer.Deserialize<ApiError>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!;
        Assert.Equal(("unsupported_media_type", "Content-Type", false), (error.Code, error.Field, error.Retryable));
        using HttpResponseMessage gone = await http.GetAsync(new Uri("v1/sequences/refused", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task List_AcceptMessagePack_AnswersJson()
    {
        using HttpClient http = MessagePackTests.Raw(_cluster.Endpoints[0], _cluster.ApiToken);
        using var request = new HttpRequestMessage(HttpMethod.Get, "v1/sequences");
        request.Headers.Accept.ParseAdd(ControlMessages.MessagePackType);
        using HttpResponseMessage response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Empty(JsonSerializer.Deserialize<List<SequenceInfo>>(await response.Content.ReadAsStringAsync(), JsonSerializerOptions.Web)!);
    }
}
