using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench control</c>: the SDK's control requests (create, describe, begin chunk, list) in JSON and in
/// MessagePack against one cluster — the bytes of each request and answer body, and the mean, p50 and p99 time of
/// each through the SDK (serializing, HTTP, the silo's work, parsing). The formats alternate request by request, so
/// both see the same cluster state; every round deletes its sequence, so a list holds one sequence on a cluster of
/// its own. The last line is one JSON object for scripts.
/// </summary>
internal static class BenchControlCommand
{
    /// <summary>Rounds before the timed ones, per format (JIT, connections, grain activation paths).</summary>
    private const int WarmUp = 10;

    private static readonly string[] Kinds = ["create", "describe", "begin chunk", "list"];

    /// <summary>A sequence as a model serves it: 32 layers, GQA 32/8, d = 128, one shard per silo.</summary>
    private static readonly SequenceSpec Spec = new() { Layers = 32, QueryHeads = 32, KeyValueHeads = 8, HeadDim = 128, DType = "bf16", Layout = "zigzag", Mask = "causal", Shards = 0 };

    private const int ChunkTokens = 4096;

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench control", args, ["local-cluster", "endpoint", "token", "requests"], []);
        int requests = options.Int("requests", 200, 1);
        return RunAsync(options, requests, stdout).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(CommandLine options, int requests, TextWriter stdout)
    {
        await using ClusterTarget target = await ClusterTarget.StartAsync(options, "bench control", defaultSilos: 3).ConfigureAwait(false);
        Format[] formats = [new("json", ControlFormat.Json, target), new("msgpack", ControlFormat.Auto, target)];
        try
        {
            for (int round = 0; round < WarmUp + requests; round++)
            {
                foreach (Format format in formats)
                {
                    await format.RoundAsync(round, timed: round >= WarmUp).ConfigureAwait(false);
                }
            }
        }
        catch (LongClusterException e)
        {
            throw new IOException($"bench control: the cluster failed a request ({e.Code}, status {e.Status}): {e.Message}", e);
        }
        finally
        {
            foreach (Format format in formats)
            {
                format.Dispose();
            }
        }

        stdout.WriteLine($"bench control: {requests} requests of each kind and format through the SDK{target.Where} (body bytes; time per request)");
        stdout.WriteLine($"{"request",-12} {"format",-8} {"answer as",-22} {"request B",10} {"answer B",9} {"mean ms",8} {"p50 ms",7} {"p99 ms",7}");
        var summary = new Dictionary<string, object> { ["requests"] = requests, ["where"] = target.Where.Trim() };
        foreach (Format format in formats)
        {
            var kinds = new Dictionary<string, object>();
            foreach (string kind in Kinds)
            {
                Figures f = format.Figures(kind);
                stdout.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"{kind,-12} {format.Name,-8} {f.AnswerType,-22} {f.RequestBytes,10} {f.AnswerBytes,9} {f.MeanMs,8:F3} {f.P50Ms,7:F3} {f.P99Ms,7:F3}"));
                kinds[kind.Replace(' ', '_')] = new Dictionary<string, object>
                {
                    ["request_bytes"] = f.RequestBytes,
                    ["answer_bytes"] = f.AnswerBytes,
                    ["answer_type"] = f.AnswerType,
                    ["mean_ms"] = Math.Round(f.MeanMs, 3),
                    ["p50_ms"] = Math.Round(f.P50Ms, 3),
                    ["p99_ms"] = Math.Round(f.P99Ms, 3),
                };
            }

            summary[format.Name] = kinds;
        }

        stdout.WriteLine(JsonSerializer.Serialize(summary));
        return CliApp.ExitOk;
    }

    private sealed record Figures(long RequestBytes, long AnswerBytes, string AnswerType, double MeanMs, double P50Ms, double P99Ms);

    /// <summary>One format's client, its sizes (from the first round) and its timings.</summary>
    private sealed class Format : IDisposable
    {
        private readonly BodySizes _sizes = new();
        private readonly HttpClient _http;
        private readonly LongClusterClient _client;
        private readonly Dictionary<string, List<double>> _milliseconds = Kinds.ToDictionary(k => k, _ => new List<double>());
        private readonly Dictionary<string, (long Request, long Answer, string Type)> _bytes = [];

        public Format(string name, ControlFormat format, ClusterTarget target)
        {
            Name = name;
            _http = new HttpClient(_sizes) { Timeout = Timeout.InfiniteTimeSpan };
            LongClusterClientOptions options = target.ClientOptions();
            options.ControlFormat = format;
            options.MaxRetries = 0;
            _client = new LongClusterClient(_http, options);
        }

        public string Name { get; }

        public async Task RoundAsync(int round, bool timed)
        {
            // Ids of one length in both formats: an id is part of most answers.
            string id = string.Create(CultureInfo.InvariantCulture, $"bench-{Name[0]}-{round:D6}");
            _sizes.Enabled = round == 0;
            await TimeAsync("create", timed, () => _client.CreateSequenceAsync(Spec, id)).ConfigureAwait(false);
            await TimeAsync("describe", timed, () => _client.GetSequenceAsync(id)).ConfigureAwait(false);
            await TimeAsync("begin chunk", timed, () => _client.BeginChunkAsync(id, new ChunkRequest(ChunkTokens))).ConfigureAwait(false);
            await TimeAsync("list", timed, () => _client.ListSequencesAsync()).ConfigureAwait(false);
            _sizes.Enabled = false;
            await _client.DeleteSequenceAsync(id).ConfigureAwait(false);
        }

        public Figures Figures(string kind)
        {
            double[] sorted = [.. _milliseconds[kind].Order()];
            (long request, long answer, string type) = _bytes[kind];
            return new Figures(request, answer, type, sorted.Average(), sorted[sorted.Length / 2], sorted[Math.Max(0, (int)Math.Ceiling(sorted.Length * 0.99) - 1)]);
        }

        public void Dispose()
        {
            _client.Dispose();
            _http.Dispose();
        }

        private async Task TimeAsync<T>(string kind, bool timed, Func<Task<T>> request)
        {
            long started = Stopwatch.GetTimestamp();
            await request().ConfigureAwait(false);
            double ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            if (timed)
            {
                _milliseconds[kind].Add(ms);
            }

            if (_sizes.Last is { } last)
            {
                _bytes[kind] = last;
                _sizes.Last = null;
            }
        }
    }

    /// <summary>
    /// While <see cref="Enabled"/> (the first round only: buffering a body to count it would change what is timed),
    /// notes the body bytes of the last request and of its answer.
    /// </summary>
    private sealed class BodySizes() : DelegatingHandler(new SocketsHttpHandler())
    {
        public bool Enabled { get; set; }

        public (long Request, long Answer, string Type)? Last { get; set; }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (!Enabled)
            {
                return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            }

            long requestBytes = request.Content is null ? 0 : (await request.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false)).LongLength;
            HttpResponseMessage response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            byte[] answer = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            Last = (requestBytes, answer.LongLength, response.Content.Headers.ContentType?.MediaType ?? "(none)");
            return response;
        }
    }
}
