using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using LongCluster.Contracts;
using LongCluster.Tensors;
using Microsoft.Extensions.Http.Resilience;
using Polly;
using Polly.Retry;

namespace LongCluster.Client;

/// <summary>
/// The client SDK over the HTTP API. Thread-safe; every method is async and takes a <see cref="CancellationToken"/>.
/// Failures are <see cref="LongClusterException"/>s carrying the status, the field, and whether a retry can help;
/// retryable failures are retried (<see cref="LongClusterClientOptions.MaxRetries"/>, by a Polly retry pipeline) before
/// they are thrown. Prefill uploads each shard's rows straight to the silo that hosts it, all shards in parallel.
/// Control messages travel as MessagePack where the silo speaks it (<see cref="LongClusterClientOptions.ControlFormat"/>).
/// </summary>
public sealed class LongClusterClient : IDisposable
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Bodies larger than this are sent after the silo answers <c>100 Continue</c> (one round trip), so a refusal arrives intact.</summary>
    private const long ExpectContinueBytes = 64 * 1024;

    /// <summary>How long a gateway that refused a connection is passed over while others answer.</summary>
    private static readonly TimeSpan GatewayRest = TimeSpan.FromSeconds(10);

    /// <summary>What a pipeline run retries, as <see cref="RetryNotice.What"/> names it.</summary>
    private static readonly ResiliencePropertyKey<string> WhatKey = new("LongCluster.What");

    /// <summary>The sequence that <see cref="CreateAndPrefillAsync"/> deletes before it builds it again.</summary>
    private static readonly ResiliencePropertyKey<string> SequenceKey = new("LongCluster.Sequence");

    private readonly LongClusterClientOptions _options;
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly Uri[] _gateways;
    private readonly ConcurrentDictionary<string, Uri> _coordinators = new(StringComparer.Ordinal);
    private readonly long[] _gatewayRestsUntil;
    private readonly ResiliencePipeline<HttpResponseMessage> _requests;
    private readonly ResiliencePipeline _rebuilds;

    /// <summary>Silos that refused a MessagePack body (415): they get JSON from then on.</summary>
    private readonly ConcurrentDictionary<Uri, bool> _jsonOnly = new();
    private int _nextEndpoint;

    /// <summary>A client with an <see cref="HttpClient"/> of its own, disposed with it.</summary>
    public LongClusterClient(LongClusterClientOptions options)
        : this(Validated(options), new HttpClient(CreateHandler()) { Timeout = Timeout.InfiniteTimeSpan }, ownsHttp: true)
    {
    }

    /// <summary>
    /// A client over the caller's <paramref name="http"/> (from <c>IHttpClientFactory</c>, say), which it neither
    /// configures nor disposes. Requests carry absolute URIs and their own bearer token; the client's
    /// <see cref="HttpClient.Timeout"/> still bounds every attempt, so leave it infinite and let
    /// <see cref="LongClusterClientOptions.RequestTimeout"/> decide.
    /// </summary>
    public LongClusterClient(HttpClient http, LongClusterClientOptions options)
        : this(Validated(options), http ?? throw new ArgumentNullException(nameof(http)), ownsHttp: false)
    {
    }

    private LongClusterClient(LongClusterClientOptions options, HttpClient http, bool ownsHttp)
    {
        _options = options;
        _http = http;
        _ownsHttp = ownsHttp;
        _gateways = [.. options.Endpoints];
        _gatewayRestsUntil = new long[_gateways.Length];
        _requests = BuildRequestPipeline();
        _rebuilds = BuildRebuildPipeline();
    }

    public async Task<SequenceInfo> CreateSequenceAsync(SequenceSpec spec, string? id = null, CancellationToken cancellationToken = default) => Remember(
        await SendAsync<SequenceInfo>(HttpMethod.Post, id is null ? "v1/sequences" : $"v1/sequences?id={Uri.EscapeDataString(id)}", spec, cancellationToken)
            .ConfigureAwait(false));

    public async Task<SequenceInfo> GetSequenceAsync(string id, CancellationToken cancellationToken = default) => Remember(
        await SendAsync<SequenceInfo>(HttpMethod.Get, $"v1/sequences/{Escape(id)}", null, cancellationToken).ConfigureAwait(false));

    public Task<List<SequenceInfo>> ListSequencesAsync(CancellationToken cancellationToken = default) =>
        SendAsync<List<SequenceInfo>>(HttpMethod.Get, "v1/sequences", null, cancellationToken);

    public async Task DeleteSequenceAsync(string id, CancellationToken cancellationToken = default)
    {
        await SendBytesAsync(null, HttpMethod.Delete, $"v1/sequences/{Escape(id)}", null, cancellationToken).ConfigureAwait(false);
        _coordinators.TryRemove(id, out _);
    }

    /// <summary>Starts a chunk; the plan says which rows go to which shard's silo.</summary>
    public Task<ChunkPlan> BeginChunkAsync(string id, ChunkRequest request, CancellationToken cancellationToken = default) =>
        SendAsync<ChunkPlan>(HttpMethod.Post, $"v1/sequences/{Escape(id)}/chunks", request, cancellationToken);

    /// <summary>Splits a layer's rows by the plan and uploads every shard's rows to the silo that hosts it, in parallel.</summary>
    public async Task UploadLayerAsync(ChunkPlan plan, int layer, LayerInput input, IProgress<PrefillProgress>? progress = null, int layers = 0, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(input);
        CheckRows(input.Query, "Query", plan.Tokens);
        CheckRows(input.Key, "Key", plan.Tokens);
        CheckRows(input.Value, "Value", plan.Tokens);
        long total = (long)input.Query.Data.Length + input.Key.Data.Length + input.Value.Data.Length;
        long uploaded = 0;
        await Task.WhenAll(plan.Shards.Select(async shard =>
        {
            await SendBytesAsync(
                new Uri(shard.Endpoint),
                HttpMethod.Put,
                $"v1/sequences/{Escape(plan.SequenceId)}/chunks/{plan.Index}/layers/{layer}/shards/{shard.Index}",
                () => new ShardRowsContent(shard, input),
                cancellationToken).ConfigureAwait(false);
            long done = Interlocked.Add(ref uploaded, (long)shard.Rows * ShardRowsContent.RowBytes(input.Query) + (2L * shard.Rows * ShardRowsContent.RowBytes(input.Key)));
            progress?.Report(new PrefillProgress(layer, layers, "upload", done, total));
        })).ConfigureAwait(false);
    }

    /// <summary>Runs one layer of the chunk on every shard (the uploads must be in place).</summary>
    public Task<LayerRunResult> RunLayerAsync(string id, int chunk, int layer, CancellationToken cancellationToken = default) =>
        SendAsync<LayerRunResult>(HttpMethod.Post, $"v1/sequences/{Escape(id)}/chunks/{chunk}/layers/{layer}/run", null, cancellationToken);

    /// <summary>
    /// Reads every shard's output from the silo that hosts it, in parallel, each body read from the socket into its
    /// rows' token positions (no whole-body buffer).
    /// </summary>
    public async Task<(float[] Output, float[] LogSumExp)> ReadOutputAsync(ChunkPlan plan, int layer, SequenceSpec spec, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(spec);
        int rowO = spec.QueryHeads * spec.HeadDim;
        int rowL = spec.QueryHeads;
        float[] output = GC.AllocateUninitializedArray<float>(checked(plan.Tokens * rowO));
        float[] lse = GC.AllocateUninitializedArray<float>(checked(plan.Tokens * rowL));
        await Task.WhenAll(plan.Shards.Select(shard => ReceiveAsync(
            new Uri(shard.Endpoint),
            $"v1/sequences/{Escape(plan.SequenceId)}/chunks/{plan.Index}/layers/{layer}/shards/{shard.Index}/output",
            async (content, ct) =>
            {
                Stream stream = await content.ReadAsStreamAsync(ct).ConfigureAwait(false);
                await using (stream.ConfigureAwait(false))
                {
                    SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(stream, content.Headers.ContentLength, $"shard {shard.Index}'s output", ct).ConfigureAwait(false);
                    SafetensorsEntry o = OutputEntry(reader, "o", [shard.Rows, spec.QueryHeads, spec.HeadDim]);
                    SafetensorsEntry l = OutputEntry(reader, "lse", [shard.Rows, spec.QueryHeads]);
                    foreach (SafetensorsEntry entry in reader.InDataOrder().Where(e => e == o || e == l))
                    {
                        await ShardRowsReader.ReadAsync(reader, entry, shard, entry == o ? output : lse, entry == o ? rowO : rowL, ct).ConfigureAwait(false);
                    }
                }
            },
            cancellationToken))).ConfigureAwait(false);
        return (output, lse);
    }

    /// <summary>
    /// One layer of a chunk end to end: upload every shard's rows to its silo, run the layer (retried while the
    /// failure is retryable: a failed layer is rolled back on every shard, and the uploads stay), read the outputs.
    /// </summary>
    public async Task<LayerOutput> PrefillLayerAsync(
        ChunkPlan plan, int layer, LayerInput input, SequenceSpec spec, IProgress<PrefillProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        await UploadLayerAsync(plan, layer, input, progress, spec.Layers, cancellationToken).ConfigureAwait(false);
        progress?.Report(new PrefillProgress(layer, spec.Layers, "run", 0, 0));
        LayerRunResult run = await RunLayerAsync(plan.SequenceId, plan.Index, layer, cancellationToken).ConfigureAwait(false);
        progress?.Report(new PrefillProgress(layer, spec.Layers, "read", 0, 0));
        (float[] output, float[] lse) = await ReadOutputAsync(plan, layer, spec, cancellationToken).ConfigureAwait(false);
        return new LayerOutput(output, lse, run);
    }

    /// <summary>
    /// Prefills a chunk of <paramref name="tokens"/> tokens through every layer of the sequence: layer l's input
    /// comes from <paramref name="inputOf"/>(l, layer l−1's output or null), as a model computes it.
    /// </summary>
    public async Task<IReadOnlyList<LayerOutput>> PrefillAsync(
        string id, int tokens, Func<int, LayerOutput?, LayerInput> inputOf, int[]? documents = null, IProgress<PrefillProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(inputOf);
        SequenceInfo info = await GetSequenceAsync(id, cancellationToken).ConfigureAwait(false);
        ChunkPlan plan = await BeginChunkAsync(id, new ChunkRequest(tokens, documents), cancellationToken).ConfigureAwait(false);
        var outputs = new List<LayerOutput>();
        for (int layer = 0; layer < info.Spec.Layers; layer++)
        {
            LayerInput input = inputOf(layer, outputs.Count > 0 ? outputs[^1] : null);
            outputs.Add(await PrefillLayerAsync(plan, layer, input, info.Spec, progress, cancellationToken).ConfigureAwait(false));
        }

        return outputs;
    }

    /// <summary>
    /// Creates a sequence and prefills its first chunk. If a silo fails so that the sequence loses a shard (it turns
    /// degraded) or its coordinator, the half-built sequence is deleted and built again on the silos left, up to
    /// <see cref="LongClusterClientOptions.MaxRetries"/> times: the caller gets complete, correct results or an exception.
    /// </summary>
    public async Task<(SequenceInfo Sequence, IReadOnlyList<LayerOutput> Layers)> CreateAndPrefillAsync(
        SequenceSpec spec, string id, int tokens, Func<int, LayerOutput?, LayerInput> inputOf, int[]? documents = null, IProgress<PrefillProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ResilienceContext context = ResilienceContextPool.Shared.Get(cancellationToken);
        context.Properties.Set(WhatKey, $"prefill {id}");
        context.Properties.Set(SequenceKey, id);
        try
        {
            return await _rebuilds.ExecuteAsync(
                async attempt =>
                {
                    await CreateSequenceAsync(spec, id, attempt.CancellationToken).ConfigureAwait(false);
                    IReadOnlyList<LayerOutput> layers = await PrefillAsync(id, tokens, inputOf, documents, progress, attempt.CancellationToken).ConfigureAwait(false);
                    return (await GetSequenceAsync(id, attempt.CancellationToken).ConfigureAwait(false), layers);
                },
                context).ConfigureAwait(false);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    /// <summary>Decodes one token through one layer: Q <c>[1, Hq, d]</c>, K and V <c>[1, Hkv, d]</c>; layers in order 0..L−1 per token.</summary>
    public async Task<DecodeOutput> DecodeAsync(string id, int layer, HostTensor query, HostTensor key, HostTensor value, int? document = null, CancellationToken cancellationToken = default)
    {
        var tensors = new Dictionary<string, HostTensor> { ["q"] = query, ["k"] = key, ["v"] = value };
        if (document is { } doc)
        {
            tensors["doc_ids"] = HostTensor.From<int>([doc], 1);
        }

        byte[] request = SafetensorsWriter.ToBytes(tensors);
        // Sent first to the silo of the sequence's coordinator when known: any silo would route it there.
        byte[] body = await SendBytesAsync(
            _coordinators.GetValueOrDefault(id), HttpMethod.Post, $"v1/sequences/{Escape(id)}/layers/{layer}/decode", () => new ByteArrayContent(request), cancellationToken)
            .ConfigureAwait(false);
        using SafetensorsReader reader = SafetensorsReader.FromBytes(body);
        long position = long.Parse(reader.Metadata["position"], System.Globalization.CultureInfo.InvariantCulture);
        return new DecodeOutput(position, reader.Read("o").ToSingle(), reader.Read("lse").ToSingle());
    }

    /// <summary>Notes where the sequence's coordinator lives, for its decode steps.</summary>
    private SequenceInfo Remember(SequenceInfo info)
    {
        if (info.CoordinatorEndpoint is { Length: > 0 } endpoint && Uri.TryCreate(endpoint.TrimEnd('/') + "/", UriKind.Absolute, out Uri? uri))
        {
            _coordinators[info.Id] = uri;
        }

        return info;
    }

    public void Dispose()
    {
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }

    /// <summary>The handler of a client's own <see cref="HttpClient"/> and of the one <c>AddLongClusterClient</c> registers.</summary>
    internal static SocketsHttpHandler CreateHandler() => new() { PooledConnectionLifetime = TimeSpan.FromMinutes(5), MaxConnectionsPerServer = 64 };

    private static LongClusterClientOptions Validated(LongClusterClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return options;
    }

    /// <summary>
    /// Retries a request whose failure says a retry can help (<see cref="LongClusterException.IsRetryable"/>: the
    /// silo's <see cref="ApiError"/> says so, a 502/503 without one, no answer within the deadline, a broken
    /// connection), waiting <see cref="LongClusterClientOptions.RetryDelay"/> doubled per retry, without jitter. Failed
    /// answers reach the pipeline as exceptions, so it never sees a Retry-After header.
    /// </summary>
    private ResiliencePipeline<HttpResponseMessage> BuildRequestPipeline()
    {
        if (_options.MaxRetries == 0)
        {
            // Polly's retry strategy refuses MaxRetryAttempts below 1; no retries is no strategy.
            return ResiliencePipeline<HttpResponseMessage>.Empty;
        }

        return new ResiliencePipelineBuilder<HttpResponseMessage>()
            .AddRetry(new HttpRetryStrategyOptions
            {
                MaxRetryAttempts = _options.MaxRetries,
                Delay = _options.RetryDelay,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = false,
                ShouldRetryAfterHeader = false,
                ShouldHandle = args => ValueTask.FromResult(args.Outcome.Exception is LongClusterException { IsRetryable: true }),
                OnRetry = args =>
                {
                    Notify(args.Context, args.AttemptNumber, args.RetryDelay, args.Outcome.Exception);
                    return default;
                },
            })
            .Build();
    }

    /// <summary>
    /// Builds a sequence again when it lost a shard (degraded) or its coordinator (not found) during its own prefill,
    /// or any step failed retryably: the half-built sequence is deleted before the wait.
    /// </summary>
    private ResiliencePipeline BuildRebuildPipeline()
    {
        if (_options.MaxRetries == 0)
        {
            return ResiliencePipeline.Empty;
        }

        return new ResiliencePipelineBuilder()
            .AddRetry(new RetryStrategyOptions
            {
                MaxRetryAttempts = _options.MaxRetries,
                Delay = _options.RetryDelay,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = false,
                ShouldHandle = new PredicateBuilder().Handle<LongClusterException>(e => e.Code is "degraded" or "not_found" || e.IsRetryable),
                OnRetry = async args =>
                {
                    Notify(args.Context, args.AttemptNumber, args.RetryDelay, args.Outcome.Exception);
                    try
                    {
                        await DeleteSequenceAsync(args.Context.Properties.GetValue(SequenceKey, ""), args.Context.CancellationToken).ConfigureAwait(false);
                    }
                    catch (LongClusterException gone) when (gone.Status == 404)
                    {
                    }
                },
            })
            .Build();
    }

    /// <summary>Tells <see cref="LongClusterClientOptions.OnRetry"/> of a retry; Polly counts attempts from 0, a notice from 1.</summary>
    private void Notify(ResilienceContext context, int attemptNumber, TimeSpan delay, Exception? failure)
    {
        if (failure is LongClusterException e)
        {
            _options.OnRetry?.Invoke(new RetryNotice(context.Properties.GetValue(WhatKey, ""), attemptNumber + 1, delay, e));
        }
    }

    /// <summary>A control request to the gateways: <paramref name="message"/> (or no body) out, a <typeparamref name="T"/> back, each in the format negotiated.</summary>
    private async Task<T> SendAsync<T>(HttpMethod method, string path, object? message, CancellationToken cancellationToken)
    {
        Func<bool, HttpContent>? content = message is null ? null : messagePack => messagePack
            ? new ByteArrayContent(ControlMessages.ToMessagePack(message.GetType(), message)) { Headers = { ContentType = new MediaTypeHeaderValue(ControlMessages.MessagePackType) } }
            : JsonContent.Create(message, message.GetType(), options: Json);
        (byte[] body, string? mediaType) = await SendAsync(null, method, path, content, control: true, null, cancellationToken).ConfigureAwait(false);
        T? answer = ControlMessages.IsMessagePack(mediaType) ? ControlMessages.FromMessagePack<T>(body) : JsonSerializer.Deserialize<T>(body, Json);
        return answer ?? throw new LongClusterException(0, new ApiError($"{path}: empty answer", null, true, "internal"));
    }

    private async Task<byte[]> SendBytesAsync(Uri? endpoint, HttpMethod method, string path, Func<HttpContent>? content, CancellationToken cancellationToken) =>
        (await SendAsync(endpoint, method, path, content is null ? null : _ => content(), control: false, null, cancellationToken).ConfigureAwait(false)).Body;

    /// <summary>A GET whose answer <paramref name="read"/> consumes as it arrives, within the attempt: a broken or late body is retried like a failed request.</summary>
    private Task ReceiveAsync(Uri endpoint, string path, Func<HttpContent, CancellationToken, Task> read, CancellationToken cancellationToken) =>
        SendAsync(endpoint, HttpMethod.Get, path, null, control: false, read, cancellationToken);

    /// <summary>
    /// Sends to <paramref name="endpoint"/> (the silo that hosts a shard), or to the gateways in turn, through the retry
    /// pipeline, building the request anew for every attempt. A refused connection never reached the silo, so the
    /// request goes elsewhere at once within the same attempt, without using up a retry: from a shard's silo to the
    /// gateways (any silo routes to the shard), and from a gateway to the next one (the refusing gateway rests for
    /// <see cref="GatewayRest"/>), until every gateway has refused once. A <paramref name="control"/> request builds its body
    /// by <paramref name="content"/>(MessagePack?) and asks for its answer in the format of <see cref="LongClusterClientOptions.ControlFormat"/>;
    /// a silo that refuses a MessagePack body (415) gets it again as JSON at once, also without using up a retry.
    /// The answer's body is returned, or consumed by <paramref name="read"/> (then the returned body is empty).
    /// </summary>
    private async Task<(byte[] Body, string? MediaType)> SendAsync(
        Uri? endpoint, HttpMethod method, string path, Func<bool, HttpContent>? content, bool control, Func<HttpContent, CancellationToken, Task>? read, CancellationToken cancellationToken)
    {
        int switched = 0;
        ResilienceContext context = ResilienceContextPool.Shared.Get(cancellationToken);
        context.Properties.Set(WhatKey, $"{method} {path}");
        try
        {
            using HttpResponseMessage response = await _requests.ExecuteAsync(
                async attempt =>
                {
                    Uri? jsonAgain = null;
                    while (true)
                    {
                        int gateway = endpoint is null && jsonAgain is null ? NextGateway() : -1;
                        Uri baseUri = jsonAgain ?? endpoint ?? _gateways[gateway];
                        jsonAgain = null;
                        bool messagePack = control && _options.ControlFormat == ControlFormat.Auto && !_jsonOnly.ContainsKey(baseUri);
                        string? accept = control ? (messagePack ? ControlMessages.AcceptEither : ControlMessages.JsonType) : null;
                        try
                        {
                            return await SendOnceAsync(new Uri(baseUri, path), method, content?.Invoke(messagePack), accept, read, attempt.CancellationToken).ConfigureAwait(false);
                        }
                        catch (LongClusterException e) when (e.Status == (int)HttpStatusCode.UnsupportedMediaType && messagePack && content is not null)
                        {
                            // This silo speaks only JSON (its MessagePack switch is off): it refused the body before reading it.
                            _jsonOnly[baseUri] = true;
                            jsonAgain = baseUri;
                        }
                        catch (LongClusterException e) when (e.InnerException is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError } && (gateway < 0 || switched < _gateways.Length - 1))
                        {
                            if (gateway >= 0)
                            {
                                Volatile.Write(ref _gatewayRestsUntil[gateway], Stopwatch.GetTimestamp() + (long)(GatewayRest.TotalSeconds * Stopwatch.Frequency));
                                switched++;
                            }

                            endpoint = null;
                        }
                    }
                },
                context).ConfigureAwait(false);

            // Buffered or consumed by SendOnceAsync: no more I/O here.
            byte[] body = read is null ? await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false) : [];
            return (body, response.Content.Headers.ContentType?.MediaType);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(context);
        }
    }

    /// <summary>The next gateway in turn that is not resting (or the next one, when all are).</summary>
    private int NextGateway()
    {
        int count = _gateways.Length;
        long now = Stopwatch.GetTimestamp();
        for (int tried = 0; tried < count; tried++)
        {
            int i = (int)((uint)Interlocked.Increment(ref _nextEndpoint) % count);
            if (Volatile.Read(ref _gatewayRestsUntil[i]) <= now)
            {
                return i;
            }
        }

        return (int)((uint)Interlocked.Increment(ref _nextEndpoint) % count);
    }

    /// <summary>
    /// One attempt, within <see cref="LongClusterClientOptions.RequestTimeout"/>: the answer when it succeeded, its body
    /// buffered or consumed by <paramref name="read"/>; else a <see cref="LongClusterException"/>.
    /// </summary>
    private async Task<HttpResponseMessage> SendOnceAsync(
        Uri uri, HttpMethod method, HttpContent? content, string? accept, Func<HttpContent, CancellationToken, Task>? read, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_options.RequestTimeout);
        using var request = new HttpRequestMessage(method, uri) { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.Token);
        if (accept is not null)
        {
            request.Headers.Accept.ParseAdd(accept);
        }

        if (request.Content?.Headers.ContentLength > ExpectContinueBytes)
        {
            // The silo may refuse a large body by its headers alone (413 over MaxRequestBytes); without asking first,
            // it would close the connection under a body still being sent, and the refusal would read as a broken pipe.
            request.Headers.ExpectContinue = true;
        }

        HttpResponseMessage? response = null;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token).ConfigureAwait(false);
            if (response.IsSuccessStatusCode && read is not null)
            {
                await read(response.Content, deadline.Token).ConfigureAwait(false);
                return response;
            }

            await response.Content.LoadIntoBufferAsync(deadline.Token).ConfigureAwait(false);
            if (response.IsSuccessStatusCode)
            {
                return response;
            }
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            response?.Dispose();
            throw new LongClusterException(0, new ApiError($"{uri.GetLeftPart(UriPartial.Authority)} did not answer: {e.Message}", null, true, "unavailable"), e);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            response?.Dispose();
            throw new LongClusterException(0, new ApiError($"{method} {uri.AbsolutePath} got no answer within {_options.RequestTimeout.TotalSeconds:0} s", null, true, "unavailable"), e);
        }
        catch (SafetensorsException e)
        {
            response?.Dispose();
            throw new LongClusterException(0, new ApiError($"{uri.GetLeftPart(UriPartial.Authority)} answered a body that cannot be read: {e.Message}", null, false, "internal"), e);
        }
        catch
        {
            response?.Dispose();
            throw;
        }

        using (response)
        {
            byte[] body = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            ApiError error;
            try
            {
                error = JsonSerializer.Deserialize<ApiError>(body, Json) ?? throw new JsonException("null");
            }
            catch (JsonException)
            {
                error = new ApiError($"HTTP {(int)response.StatusCode} from {uri.GetLeftPart(UriPartial.Authority)}", null, response.StatusCode is HttpStatusCode.ServiceUnavailable or HttpStatusCode.BadGateway, "unavailable");
            }

            throw new LongClusterException((int)response.StatusCode, error);
        }
    }

    private static void CheckRows(HostTensor tensor, string name, int tokens)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        if (tensor.Shape.Count != 3 || tensor.Shape[0] != tokens)
        {
            throw new ArgumentException($"{name} must be [tokens = {tokens}, heads, d], got [{string.Join(", ", tensor.Shape)}]", name);
        }
    }

    /// <summary>Tensor <paramref name="name"/> of a shard's output body, checked to be f32 of <paramref name="shape"/>.</summary>
    private static SafetensorsEntry OutputEntry(SafetensorsStreamReader reader, string name, long[] shape)
    {
        if (!reader.Entries.TryGetValue(name, out SafetensorsEntry? entry) || entry.DType != DType.F32 || !entry.Shape.SequenceEqual(shape))
        {
            throw new SafetensorsException(
                $"{reader.Source}: expected '{name}' F32 [{string.Join(", ", shape)}], got {(entry is null ? "none" : $"{entry.DType.SafetensorsName()} [{string.Join(", ", entry.Shape)}]")}");
        }

        return entry;
    }

    private static string Escape(string id) => Uri.EscapeDataString(id);
}
