using System.Buffers;
using System.Globalization;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Grains.Diagnostics;
using LongCluster.Grains.Placement;
using LongCluster.Tensors;
using MessagePack;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Net.Http.Headers;

namespace LongCluster.Service;

/// <summary>
/// The client HTTP API, on every silo. Control messages are JSON, or MessagePack where the request asks for it
/// (<see cref="ControlMessages"/>; <see cref="AttentionServiceOptions.MessagePack"/> turns it off) — every error body is
/// JSON —, tensors are safetensors bodies, every request under
/// <c>/v1</c> needs <c>Authorization: Bearer &lt;token&gt;</c>. Every refusal is an <see cref="ApiError"/> naming the
/// field, raised before anything is changed. Rows are uploaded to (and outputs read from) the silo that hosts the
/// shard — the chunk plan names it — so no gateway carries a whole sequence; a request that reaches another silo
/// still works, its tensors travelling on between silos.
/// </summary>
internal static partial class ClientApi
{
    private const string SafetensorsType = "application/octet-stream";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private static readonly MediaTypeHeaderValue JsonMediaType = new(ControlMessages.JsonType);

    public static void Map(WebApplication app, AttentionServiceOptions options)
    {
        byte[] token = Encoding.UTF8.GetBytes(options.ApiToken);
        app.Use(async (context, next) =>
        {
            if (context.Request.Path.StartsWithSegments("/v1") && !Authorized(context.Request, token))
            {
                await WriteError(context.Response, StatusCodes.Status401Unauthorized, new ApiError("missing or wrong bearer token (Authorization: Bearer <token>)", "Authorization", false, "unauthorized")).ConfigureAwait(false);
                return;
            }

            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (Exception e) when (!context.Response.HasStarted)
            {
                (int status, ApiError error) = Classify(e);
                await WriteError(context.Response, status, error).ConfigureAwait(false);
            }
        });

        IGrainFactory grains = app.Services.GetRequiredService<IGrainFactory>();
        ICoordinatorGrain Coordinator(string id) => grains.GetGrain<ICoordinatorGrain>(CheckId(id));

        app.MapPost("/v1/diagnostics/transfer", async (HttpContext http, int? frames, int? frameMib, int? calls) =>
        {
            // Two probes, spread-placed on two different silos (when there are two), one measuring its calls to the other.
            string run = Guid.NewGuid().ToString("N")[..12];
            string first = new ShardKey("probe", run, 0, 2).ToString();
            string second = new ShardKey("probe", run, 1, 2).ToString();
            int megabytes = frameMib ?? 16;
            if (megabytes is < 1 or > 512)
            {
                throw ServiceException.Invalid("frameMib", $"expected 1..512, got {megabytes}");
            }

            TransferFigures figures = await grains.GetGrain<ITransferProbeGrain>(first)
                .MeasureAsync(second, frames ?? 64, megabytes * 1024 * 1024, calls ?? 20000, http.RequestAborted).ConfigureAwait(false);
            return Control(http, options, figures);
        });
        app.MapPost("/v1/sequences", async (HttpContext http, string? id) =>
        {
            SequenceSpec spec = await ReadControlAsync<SequenceSpec>(http, options).ConfigureAwait(false);
            SequenceInfo info = await Coordinator(id ?? $"seq-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}").CreateAsync(spec, http.RequestAborted).ConfigureAwait(false);
            return Control(http, options, info, StatusCodes.Status201Created);
        });
        app.MapGet("/v1/sequences", async (HttpContext http) =>
        {
            string[] ids = await grains.GetGrain<ISequenceDirectoryGrain>("all").ListAsync(http.RequestAborted).ConfigureAwait(false);
            var infos = new List<SequenceInfo>();
            foreach (string id in ids)
            {
                try
                {
                    infos.Add(await Coordinator(id).DescribeAsync(http.RequestAborted).ConfigureAwait(false));
                }
                catch (Exception e) when (Classify(e).Status == StatusCodes.Status404NotFound)
                {
                    // Listed but gone (its coordinator's silo failed): not a sequence any more.
                }
            }

            return Control(http, options, infos);
        });
        app.MapGet("/v1/sequences/{id}", async (HttpContext http, string id) =>
            Control(http, options, await Coordinator(id).DescribeAsync(http.RequestAborted).ConfigureAwait(false)));
        app.MapDelete("/v1/sequences/{id}", async (HttpContext http, string id) =>
        {
            await Coordinator(id).DeleteAsync(http.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
        app.MapPost("/v1/sequences/{id}/chunks", async (HttpContext http, string id) =>
        {
            ChunkRequest request = await ReadControlAsync<ChunkRequest>(http, options).ConfigureAwait(false);
            return Control(http, options, await Coordinator(id).BeginChunkAsync(request, http.RequestAborted).ConfigureAwait(false));
        });
        app.MapPut("/v1/sequences/{id}/chunks/{chunk:int}/layers/{layer:int}/shards/{shard:int}", async (HttpContext http, string id, int chunk, int layer, int shard) =>
        {
            ShardAddress address = await Coordinator(id).ShardAsync(shard, http.RequestAborted).ConfigureAwait(false);
            Dictionary<string, TensorRows> tensors = await ReadTensorsAsync(http, options, "q", "k", "v").ConfigureAwait(false);
            await grains.GetGrain<ISequenceShardGrain>(address.Key)
                .UploadAsync(address.Epoch, chunk, layer, tensors["q"], tensors["k"], tensors["v"], http.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
        app.MapPost("/v1/sequences/{id}/chunks/{chunk:int}/layers/{layer:int}/run", async (HttpContext http, string id, int chunk, int layer) =>
            Control(http, options, await Coordinator(id).RunLayerAsync(chunk, layer, http.RequestAborted).ConfigureAwait(false)));
        app.MapGet("/v1/sequences/{id}/chunks/{chunk:int}/layers/{layer:int}/shards/{shard:int}/output", async (HttpContext http, string id, int chunk, int layer, int shard) =>
        {
            ShardAddress address = await Coordinator(id).ShardAsync(shard, http.RequestAborted).ConfigureAwait(false);
            ShardOutput output = await grains.GetGrain<ISequenceShardGrain>(address.Key).ReadOutputAsync(address.Epoch, chunk, layer, http.RequestAborted).ConfigureAwait(false);
            return Tensors(OutputTensors(output.Rows, address, output.Output, output.LogSumExp), null);
        });
        app.MapGet("/v1/sequences/{id}/chunks/{chunk:int}/layers/{layer:int}/output", async (HttpContext http, string id, int chunk, int layer) =>
        {
            ICoordinatorGrain coordinator = Coordinator(id);
            ChunkPlan plan = await coordinator.CurrentChunkAsync(http.RequestAborted).ConfigureAwait(false)
                ?? throw ServiceException.Conflict("chunk", "no chunk was started");
            var shards = await Task.WhenAll(plan.Shards.Select(async rows =>
            {
                ShardAddress address = await coordinator.ShardAsync(rows.Index, http.RequestAborted).ConfigureAwait(false);
                ShardOutput output = await grains.GetGrain<ISequenceShardGrain>(address.Key).ReadOutputAsync(address.Epoch, chunk, layer, http.RequestAborted).ConfigureAwait(false);
                return (Rows: rows, Address: address, Output: output);
            })).ConfigureAwait(false);
            ShardAddress shape = shards[0].Address;
            int rowL = shape.QueryHeads * sizeof(float);
            int rowO = rowL * shape.HeadDim;
            byte[] o = new byte[(long)plan.Tokens * rowO];
            byte[] l = new byte[(long)plan.Tokens * rowL];
            foreach ((ShardRows rows, _, ShardOutput output) in shards)
            {
                rows.ToTokenOrder(output.Output, o, rowO);
                rows.ToTokenOrder(output.LogSumExp, l, rowL);
            }

            return Tensors(OutputTensors(plan.Tokens, shape, o, l), null);
        });
        app.MapPost("/v1/sequences/{id}/layers/{layer:int}/decode", async (HttpContext http, string id, int layer) =>
        {
            Dictionary<string, TensorRows> tensors = await ReadTensorsAsync(http, options, "q", "k", "v").ConfigureAwait(false);
            int document = tensors.TryGetValue("doc_ids", out TensorRows? docs) ? DocumentOf(docs) : 0;
            DecodeResult result = await Coordinator(id).DecodeAsync(layer, tensors["q"], tensors["k"], tensors["v"], document, http.RequestAborted).ConfigureAwait(false);
            int heads = result.LogSumExp.Length;
            var outputs = new Dictionary<string, HostTensor>
            {
                ["o"] = HostTensor.From<float>(result.Output, 1, heads, result.Output.Length / heads),
                ["lse"] = HostTensor.From<float>(result.LogSumExp, 1, heads),
            };
            return Tensors(outputs, new Dictionary<string, string>
            {
                ["position"] = result.Position.ToString(CultureInfo.InvariantCulture),
                ["layer"] = result.Layer.ToString(CultureInfo.InvariantCulture),
                ["seconds"] = result.Seconds.ToString("R", CultureInfo.InvariantCulture),
            });
        });
    }

    /// <summary>Maps a failure (raised here or on another silo) to a status and an <see cref="ApiError"/>: the one place that does.</summary>
    internal static (int Status, ApiError Error) Classify(Exception e) => e switch
    {
        ServiceException s => (StatusOf(s.Code), new ApiError(s.Message, s.Field, s.Retryable, NameOf(s.Code))),
        BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } => (StatusCodes.Status413PayloadTooLarge, new ApiError(e.Message, "body", false, "too_large")),
        BadHttpRequestException { StatusCode: StatusCodes.Status415UnsupportedMediaType } => (StatusCodes.Status415UnsupportedMediaType, new ApiError(e.Message, "Content-Type", false, "unsupported_media_type")),
        BadHttpRequestException => (StatusCodes.Status400BadRequest, new ApiError(e.Message, "body", false, "invalid_request")),
        SiloUnavailableException or OrleansMessageRejectionException or TimeoutException or IOException
            => (StatusCodes.Status503ServiceUnavailable, new ApiError(e.Message, null, true, "unavailable")),
        _ => (StatusCodes.Status500InternalServerError, new ApiError(e.Message, null, false, "internal")),
    };

    private static int StatusOf(ServiceErrorCode code) => code switch
    {
        ServiceErrorCode.InvalidRequest => StatusCodes.Status400BadRequest,
        ServiceErrorCode.NotFound => StatusCodes.Status404NotFound,
        ServiceErrorCode.Conflict or ServiceErrorCode.Degraded => StatusCodes.Status409Conflict,
        ServiceErrorCode.LimitExceeded => StatusCodes.Status429TooManyRequests,
        ServiceErrorCode.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status500InternalServerError, // Internal
    };

    private static string NameOf(ServiceErrorCode code) => code switch
    {
        ServiceErrorCode.InvalidRequest => "invalid_request",
        ServiceErrorCode.NotFound => "not_found",
        ServiceErrorCode.Conflict => "conflict",
        ServiceErrorCode.Degraded => "degraded",
        ServiceErrorCode.LimitExceeded => "limit_exceeded",
        ServiceErrorCode.Unavailable => "unavailable",
        _ => "internal",
    };

    private static bool Authorized(HttpRequest request, byte[] token)
    {
        string header = request.Headers.Authorization.ToString();
        return header.StartsWith("Bearer ", StringComparison.Ordinal)
            && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim()), token);
    }

    private static string CheckId(string id) => SequenceId().IsMatch(id)
        ? id
        : throw ServiceException.Invalid("id", $"expected 1..128 characters of letters, digits, '.', '_' or '-', got '{id}'");

    private static async Task<byte[]> ReadBodyAsync(HttpContext http, AttentionServiceOptions options)
    {
        LimitBody(http, options);
        long? declared = http.Request.ContentLength;
        using var buffer = declared is { } n ? new MemoryStream((int)Math.Min(n, Array.MaxLength)) : new MemoryStream();
        await http.Request.Body.CopyToAsync(buffer, http.RequestAborted).ConfigureAwait(false);
        return buffer.Length == buffer.Capacity ? buffer.GetBuffer() : buffer.ToArray();
    }

    /// <summary>Holds the body to <see cref="AttentionServiceOptions.MaxRequestBytes"/>, refusing at once one that declares more.</summary>
    private static void LimitBody(HttpContext http, AttentionServiceOptions options)
    {
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = options.MaxRequestBytes;
        }

        long? declared = http.Request.ContentLength;
        if (declared > options.MaxRequestBytes)
        {
            throw new BadHttpRequestException($"body: {declared} bytes is over the limit of {options.MaxRequestBytes} (MaxRequestBytes)", StatusCodes.Status413PayloadTooLarge);
        }
    }

    /// <summary>
    /// A control message from the body: MessagePack when <c>Content-Type</c> says so (refused with 415 before the body
    /// is read when this silo speaks only JSON), otherwise JSON whatever it says (curl's default form type included).
    /// </summary>
    private static async Task<T> ReadControlAsync<T>(HttpContext http, AttentionServiceOptions options)
    {
        bool messagePack = MediaTypeHeaderValue.TryParse(http.Request.ContentType, out MediaTypeHeaderValue? type) && ControlMessages.IsMessagePack(type.MediaType.Value);
        if (messagePack && !options.MessagePack)
        {
            throw new BadHttpRequestException(
                $"Content-Type: this silo speaks JSON only (LongCluster:Service:MessagePack is false); send the {typeof(T).Name} as {ControlMessages.JsonType}", StatusCodes.Status415UnsupportedMediaType);
        }

        byte[] body = await ReadBodyAsync(http, options).ConfigureAwait(false);
        if (messagePack)
        {
            return ReadMessagePack<T>(body);
        }

        if (body.Length == 0)
        {
            throw ServiceException.Invalid("body", $"expected a JSON {typeof(T).Name}, got an empty body");
        }

        try
        {
            return JsonSerializer.Deserialize<T>(body, Json) ?? throw ServiceException.Invalid("body", $"expected a JSON {typeof(T).Name}, got null");
        }
        catch (JsonException e)
        {
            throw ServiceException.Invalid(e.Path is { Length: > 2 } path ? path.TrimStart('$', '.') : "body", $"not a valid {typeof(T).Name}: {e.Message}");
        }
    }

    /// <summary>
    /// A MessagePack map of <typeparamref name="T"/>'s properties, held to the JSON path's rules: a key <typeparamref name="T"/>
    /// lacks (MessagePack would skip it, leaving a default the client did not mean) or a value of the wrong type is
    /// refused naming that field as the JSON path would (<c>layers</c>, <c>dtype</c>); anything else wrong, naming the body.
    /// </summary>
    private static T ReadMessagePack<T>(byte[] body)
    {
        string what = $"a MessagePack {typeof(T).Name}";
        if (body.Length == 0)
        {
            throw ServiceException.Invalid("body", $"expected {what}, got an empty body");
        }

        Dictionary<string, PropertyInfo> members = typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance).ToDictionary(p => p.Name, StringComparer.Ordinal);
        try
        {
            var reader = new MessagePackReader(body);
            if (reader.NextMessagePackType != MessagePackType.Map)
            {
                throw ServiceException.Invalid("body", $"expected {what} (a map), got a {reader.NextMessagePackType}");
            }

            for (int count = reader.ReadMapHeader(); count > 0; count--)
            {
                string key = reader.NextMessagePackType == MessagePackType.String ? reader.ReadString()! : throw ServiceException.Invalid("body", $"expected {what}: its keys are strings, got a {reader.NextMessagePackType}");
                if (!members.TryGetValue(key, out PropertyInfo? member))
                {
                    throw ServiceException.Invalid(key, $"{typeof(T).Name} has no field '{key}' (it has: {string.Join(", ", members.Keys.Order(StringComparer.Ordinal))})");
                }

                ReadOnlySequence<byte> value = reader.ReadRaw();
                try
                {
                    _ = ControlMessages.FromMessagePack(member.PropertyType, value.ToArray());
                }
                catch (MessagePackSerializationException e)
                {
                    string field = member.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name ?? JsonNamingPolicy.CamelCase.ConvertName(key);
                    throw ServiceException.Invalid(field, $"not a valid {typeof(T).Name}: '{key}' is not a {member.PropertyType.Name}: {Innermost(e).Message}");
                }
            }

            if (!reader.End)
            {
                throw ServiceException.Invalid("body", $"expected {what}, got {body.Length - reader.Consumed} bytes after it");
            }

            return ControlMessages.FromMessagePack<T>(body) ?? throw ServiceException.Invalid("body", $"expected {what}, got nil");
        }
        catch (Exception e) when (e is MessagePackSerializationException or EndOfStreamException)
        {
            throw ServiceException.Invalid("body", $"not {what}: {Innermost(e).Message}");
        }
    }

    private static Exception Innermost(Exception e) => e.InnerException is { } inner ? Innermost(inner) : e;

    /// <summary>
    /// The body's tensors, read from the socket straight into their own arrays (a shard's upload is hundreds of MB: no
    /// whole-body buffer, no second copy); the required names are checked from the header, before the data is read.
    /// </summary>
    private static async Task<Dictionary<string, TensorRows>> ReadTensorsAsync(HttpContext http, AttentionServiceOptions options, params string[] required)
    {
        LimitBody(http, options);
        Dictionary<string, HostTensor> tensors;
        try
        {
            SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(http.Request.Body, http.Request.ContentLength, "body", http.RequestAborted).ConfigureAwait(false);
            foreach (string name in required)
            {
                if (!reader.Entries.ContainsKey(name))
                {
                    throw ServiceException.Invalid(name, $"the body has no tensor '{name}' (it has: {string.Join(", ", reader.Entries.Keys.Order())}); expected {string.Join(", ", required)}");
                }
            }

            tensors = await reader.ReadAllAsync(http.RequestAborted).ConfigureAwait(false);
        }
        catch (SafetensorsException e)
        {
            throw ServiceException.Invalid("body", $"expected a safetensors body with tensors {string.Join(", ", required)}: {e.Message}");
        }

        return tensors.ToDictionary(t => t.Key, t => new TensorRows(t.Value.DType.SafetensorsName(), [.. t.Value.Shape], t.Value.DataArray()), StringComparer.Ordinal);
    }

    private static int DocumentOf(TensorRows docs) => docs switch
    {
        { DType: "I32", Shape: [1], Data.Length: 4 } => MemoryMarshal.Read<int>(docs.Data),
        { DType: "I64", Shape: [1], Data.Length: 8 } => checked((int)MemoryMarshal.Read<long>(docs.Data)),
        _ => throw ServiceException.Invalid("doc_ids", $"expected I32 or I64 [1], got {docs.DType}[{string.Join(", ", docs.Shape)}]"),
    };

    private static Dictionary<string, HostTensor> OutputTensors(int rows, ShardAddress shape, byte[] output, byte[] lse) => new()
    {
        ["o"] = new HostTensor(DType.F32, [rows, shape.QueryHeads, shape.HeadDim], output),
        ["lse"] = new HostTensor(DType.F32, [rows, shape.QueryHeads], lse),
    };

    private static IResult Tensors(Dictionary<string, HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata) => new SafetensorsResult(tensors, metadata);

    /// <summary>
    /// A control answer, as MessagePack when this silo speaks it and the request's <c>Accept</c> names
    /// <c>application/x-msgpack</c> with a q-value above 0 and at least JSON's (<c>application/json</c>,
    /// <c>application/*</c> or <c>*/*</c>); otherwise JSON, also to curl's <c>*/*</c> and to no <c>Accept</c> at all.
    /// </summary>
    private static IResult Control<T>(HttpContext http, AttentionServiceOptions options, T value, int status = StatusCodes.Status200OK)
    {
        http.Response.Headers.Vary = "Accept";
        return options.MessagePack && AcceptsMessagePack(http.Request)
            ? new MessagePackResult(ControlMessages.ToMessagePack(value), status)
            : Results.Json(value, Json, statusCode: status);
    }

    private static bool AcceptsMessagePack(HttpRequest request)
    {
        double messagePack = 0;
        double json = 0;
        foreach (MediaTypeHeaderValue accept in request.GetTypedHeaders().Accept)
        {
            double quality = accept.Quality ?? 1;
            if (ControlMessages.IsMessagePack(accept.MediaType.Value))
            {
                messagePack = Math.Max(messagePack, quality);
            }
            else if (JsonMediaType.IsSubsetOf(accept))
            {
                json = Math.Max(json, quality);
            }
        }

        return messagePack > 0 && messagePack >= json;
    }

    private static Task WriteError(HttpResponse response, int status, ApiError error)
    {
        response.StatusCode = status;
        return response.WriteAsJsonAsync(error, Json);
    }

    [GeneratedRegex("^[A-Za-z0-9._-]{1,128}$")]
    private static partial Regex SequenceId();

    /// <summary>Tensors as a safetensors body, written from their own arrays (a shard's output is hundreds of MB: no copy into one buffer first).</summary>
    private sealed class SafetensorsResult(Dictionary<string, HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            SafetensorsBody body = SafetensorsWriter.Body(tensors, metadata);
            httpContext.Response.ContentType = SafetensorsType;
            httpContext.Response.ContentLength = body.Length;
            return body.WriteAsync(httpContext.Response.Body, httpContext.RequestAborted);
        }
    }

    /// <summary>A control answer in MessagePack, with its status (<c>Results.Bytes</c> takes none).</summary>
    private sealed class MessagePackResult(byte[] body, int status) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.StatusCode = status;
            httpContext.Response.ContentType = ControlMessages.MessagePackType;
            httpContext.Response.ContentLength = body.Length;
            return httpContext.Response.Body.WriteAsync(body, httpContext.RequestAborted).AsTask();
        }
    }
}
