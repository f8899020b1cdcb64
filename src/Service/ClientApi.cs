using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Grains.Diagnostics;
using LongCluster.Grains.Placement;
using LongCluster.Tensors;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service;

/// <summary>
/// The client HTTP API, on every silo. Control is JSON, tensors are safetensors bodies, every request under
/// <c>/v1</c> needs <c>Authorization: Bearer &lt;token&gt;</c>. Every refusal is an <see cref="ApiError"/> naming the
/// field, raised before anything is changed. Rows are uploaded to (and outputs read from) the silo that hosts the
/// shard — the chunk plan names it — so no gateway carries a whole sequence; a request that reaches another silo
/// still works, its tensors travelling on between silos.
/// </summary>
internal static partial class ClientApi
{
    private const string SafetensorsType = "application/octet-stream";

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

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
            return Results.Json(figures, Json);
        });
        app.MapPost("/v1/sequences", async (HttpContext http, string? id) =>
        {
            SequenceSpec spec = await ReadJsonAsync<SequenceSpec>(http, options).ConfigureAwait(false);
            SequenceInfo info = await Coordinator(id ?? $"seq-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}").CreateAsync(spec, http.RequestAborted).ConfigureAwait(false);
            return Results.Json(info, Json, statusCode: StatusCodes.Status201Created);
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

            return Results.Json(infos, Json);
        });
        app.MapGet("/v1/sequences/{id}", async (HttpContext http, string id) =>
            Results.Json(await Coordinator(id).DescribeAsync(http.RequestAborted).ConfigureAwait(false), Json));
        app.MapDelete("/v1/sequences/{id}", async (HttpContext http, string id) =>
        {
            await Coordinator(id).DeleteAsync(http.RequestAborted).ConfigureAwait(false);
            return Results.NoContent();
        });
        app.MapPost("/v1/sequences/{id}/chunks", async (HttpContext http, string id) =>
        {
            ChunkRequest request = await ReadJsonAsync<ChunkRequest>(http, options).ConfigureAwait(false);
            return Results.Json(await Coordinator(id).BeginChunkAsync(request, http.RequestAborted).ConfigureAwait(false), Json);
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
            Results.Json(await Coordinator(id).RunLayerAsync(chunk, layer, http.RequestAborted).ConfigureAwait(false), Json));
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
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = options.MaxRequestBytes;
        }

        long? declared = http.Request.ContentLength;
        if (declared > options.MaxRequestBytes)
        {
            throw new BadHttpRequestException($"body: {declared} bytes is over the limit of {options.MaxRequestBytes} (MaxRequestBytes)", StatusCodes.Status413PayloadTooLarge);
        }

        using var buffer = declared is { } n ? new MemoryStream((int)Math.Min(n, Array.MaxLength)) : new MemoryStream();
        await http.Request.Body.CopyToAsync(buffer, http.RequestAborted).ConfigureAwait(false);
        return buffer.Length == buffer.Capacity ? buffer.GetBuffer() : buffer.ToArray();
    }

    private static async Task<T> ReadJsonAsync<T>(HttpContext http, AttentionServiceOptions options)
    {
        byte[] body = await ReadBodyAsync(http, options).ConfigureAwait(false);
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

    private static async Task<Dictionary<string, TensorRows>> ReadTensorsAsync(HttpContext http, AttentionServiceOptions options, params string[] required)
    {
        byte[] body = await ReadBodyAsync(http, options).ConfigureAwait(false);
        SafetensorsReader reader;
        try
        {
            reader = SafetensorsReader.FromBytes(body);
        }
        catch (Exception e) when (e is SafetensorsException or InvalidDataException or ArgumentException)
        {
            throw ServiceException.Invalid("body", $"expected a safetensors body with tensors {string.Join(", ", required)}: {e.Message}");
        }

        using (reader)
        {
            var tensors = new Dictionary<string, TensorRows>(StringComparer.Ordinal);
            foreach (string name in reader.Entries.Keys)
            {
                HostTensor tensor = reader.Read(name);
                tensors[name] = new TensorRows(tensor.DType.SafetensorsName(), [.. tensor.Shape], tensor.Data);
            }

            foreach (string name in required)
            {
                if (!tensors.ContainsKey(name))
                {
                    throw ServiceException.Invalid(name, $"the body has no tensor '{name}' (it has: {string.Join(", ", tensors.Keys.Order())}); expected {string.Join(", ", required)}");
                }
            }

            return tensors;
        }
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

    private static IResult Tensors(Dictionary<string, HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata) =>
        Results.Bytes(SafetensorsWriter.ToBytes(tensors, metadata), SafetensorsType);

    private static Task WriteError(HttpResponse response, int status, ApiError error)
    {
        response.StatusCode = status;
        return response.WriteAsJsonAsync(error, Json);
    }

    [GeneratedRegex("^[A-Za-z0-9._-]{1,128}$")]
    private static partial Regex SequenceId();
}
