using System.Collections.ObjectModel;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using LongCluster.Client;
using LongCluster.Contracts;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace LongCluster.Service.Tests;

public sealed partial class TelemetryTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private static readonly SequenceSpec Spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16, Layout = "zigzag", Mask = "causal", Shards = 3 };

    [Fact]
    public async Task Metrics_AfterPrefill_EverySiloServesLongClusterSeriesWithValues()
    {
        const int Tokens = 96;
        var layers = Enumerable.Range(0, Spec.Layers).Select(l => Data.Layer(Spec, Tokens, 40 + l)).ToArray();
        (SequenceInfo info, _) = await fixture.Client.CreateAndPrefillAsync(Spec, "metrics", Tokens, (l, _) => Data.Input(Spec, layers[l], 0, Tokens));
        try
        {
            string[] silos = [.. fixture.Cluster.Silos.Select(s => s.Address)];
            Assert.Equal(3, info.ShardMap.Select(s => s.Silo).Distinct().Count());
            using var http = new HttpClient();
            foreach (Uri endpoint in fixture.Cluster.Endpoints)
            {
                string text = await http.GetStringAsync(new Uri(endpoint, "metrics"));
                // The silos share this process, so each one's /metrics shows every silo, told apart by the silo attribute.
                Assert.True(Sum(text, "longcluster_tokens_prefilled_total", $"silo=\"{info.Coordinator}\"") >= Tokens, $"tokens prefilled at {endpoint}");
                foreach (string silo in silos)
                {
                    Assert.True(Sum(text, "longcluster_kv_resident_bytes", $"silo=\"{silo}\"") > 0, $"resident bytes of {silo} at {endpoint}");
                    Assert.True(Sum(text, "longcluster_layer_duration_seconds_count", $"silo=\"{silo}\"", "phase=\"compute\"") >= Spec.Layers, $"compute time of {silo}");
                    Assert.True(Sum(text, "longcluster_layer_duration_seconds_sum", $"silo=\"{silo}\"", "phase=\"compute\"") > 0, $"compute seconds of {silo}");
                    Assert.True(Sum(text, "longcluster_exchange_bytes_total", $"silo=\"{silo}\"") > 0, $"bytes exchanged by {silo}");
                }

                Assert.True(Sum(text, "longcluster_sequences", $"silo=\"{info.Coordinator}\"", "state=\"ready\"") >= 1, "a ready sequence");
                // The CPU backend keeps nothing elsewhere: the device gauge is there, naming it, at 0.
                string backend = fixture.Cluster.Silos[0].Resources.Backend.Name;
                Assert.Contains(
                    text.Split('\n'),
                    line => line.StartsWith("longcluster_kv_device_bytes{", StringComparison.Ordinal) && line.Contains($"backend=\"{backend}\"", StringComparison.Ordinal)
                        && line.Contains($"silo=\"{info.Coordinator}\"", StringComparison.Ordinal) && line.Split(' ')[1] == "0");
                Assert.True(Sum(text, "longcluster_http_requests_total", "route=\"/v1/sequences/{id}/chunks/{chunk:int}/layers/{layer:int}/run\"", "status=\"200\"") >= Spec.Layers, "layer runs served");
                Assert.True(Sum(text, "dotnet_process_memory_working_set_bytes") > 0, "the runtime's meter");
                Assert.Contains("\norleans_", text, StringComparison.Ordinal);
            }
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("metrics");
        }
    }

    [Fact]
    public async Task Tracing_OneLayerRun_OneTraceFromTheApiThroughTheCoordinatorToEveryShard()
    {
        var spans = new LockedCollection<Activity>();
        using (TracerProvider tracing = Sdk.CreateTracerProviderBuilder()
            .AddSource("LongCluster", "Microsoft.Orleans.Application")
            .AddAspNetCoreInstrumentation()
            .AddInMemoryExporter(spans)
            .Build())
        {
            const int Tokens = 64;
            var layer = Data.Layer(Spec, Tokens, 7);
            await fixture.Client.CreateAndPrefillAsync(Spec, "traced", Tokens, (_, _) => Data.Input(Spec, layer, 0, Tokens));
            await fixture.Client.DeleteSequenceAsync("traced");
            tracing.ForceFlush();
        }

        Activity coordinator = Assert.Single(spans, a => a.DisplayName == "coordinator run layer" && Tag(a, "longcluster.sequence") == "traced" && Tag(a, "longcluster.layer") == "0");
        ActivityTraceId trace = coordinator.TraceId;
        Activity[] inTrace = [.. spans.Where(a => a.TraceId == trace)];
        Activity api = Assert.Single(inTrace, a => a.Kind == ActivityKind.Server && a.Source.Name == "Microsoft.AspNetCore");
        Assert.Contains("/run", api.DisplayName, StringComparison.Ordinal);
        Assert.Null(api.Parent);
        Activity[] shards = [.. inTrace.Where(a => a.DisplayName == "shard run layer")];
        Assert.Equal(["0", "1", "2"], shards.Select(s => Tag(s, "longcluster.shard")).Order(StringComparer.Ordinal));
        Assert.Contains(inTrace, a => a.Source.Name == "Microsoft.Orleans.Application");
        // Each shard's span descends from the coordinator's through Orleans' propagated context, not a fresh root.
        var byId = inTrace.ToDictionary(a => a.SpanId);
        foreach (Activity shard in shards)
        {
            Assert.Contains(coordinator.SpanId, Ancestors(shard, byId));
        }
    }

    [Fact]
    public async Task Otlp_EndpointConfigured_SiloExportsTracesAndMetricsThere()
    {
        await using var receiver = await OtlpReceiver.StartAsync();
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(1, configureHost: host => host.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.Endpoint.ToString(),
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
            ["OTEL_BSP_SCHEDULE_DELAY"] = "100",
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "200",
        }));
        using LongClusterClient client = cluster.NewClient();
        var spec = Spec with { Shards = 1, Layers = 1 };
        var layer = Data.Layer(spec, 32, 3);
        await client.CreateAndPrefillAsync(spec, "otlp", 32, (_, _) => Data.Input(spec, layer, 0, 32));

        // OTLP protobuf carries names as plain UTF-8: the spans' and instruments' names appear in the bodies.
        await receiver.Received("/v1/traces", "shard run layer").WaitAsync(TimeSpan.FromSeconds(30));
        await receiver.Received("/v1/traces", "coordinator run layer").WaitAsync(TimeSpan.FromSeconds(30));
        await receiver.Received("/v1/metrics", "longcluster.tokens.prefilled").WaitAsync(TimeSpan.FromSeconds(30));
    }

    private static string? Tag(Activity activity, string name) => activity.GetTagItem(name) switch
    {
        null => null,
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        var o => o.ToString(),
    };

    private static IEnumerable<ActivitySpanId> Ancestors(Activity activity, Dictionary<ActivitySpanId, Activity> byId)
    {
        ActivitySpanId parent = activity.ParentSpanId;
        while (parent != default)
        {
            yield return parent;
            parent = byId.TryGetValue(parent, out Activity? next) ? next.ParentSpanId : default;
        }
    }

    /// <summary>The sum of every sample of <paramref name="metric"/> whose labels include all of <paramref name="labels"/>.</summary>
    /// <summary>The sum of a metric's samples in Prometheus text whose labels contain every one of <paramref name="labels"/>; 0 when none.</summary>
    internal static double Sum(string text, string metric, params string[] labels)
    {
        double sum = 0;
        foreach (Match m in Sample().Matches(text))
        {
            if (m.Groups["name"].Value == metric && labels.All(l => m.Groups["labels"].Value.Contains(l, StringComparison.Ordinal)))
            {
                sum += double.Parse(m.Groups["value"].Value, CultureInfo.InvariantCulture);
            }
        }

        return sum;
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>(?:[^""}]|""(?:[^""\\]|\\.)*"")*)\})? (?<value>\S+)", RegexOptions.Multiline)]
    private static partial Regex Sample();

    /// <summary>The in-memory exporter adds from whichever thread ends a span: this collection takes them one at a time.</summary>
    private sealed class LockedCollection<T> : Collection<T>
    {
        protected override void InsertItem(int index, T item)
        {
            lock (this)
            {
                base.InsertItem(index, item);
            }
        }
    }

    /// <summary>An OTLP/HTTP receiver: remembers every body posted to each path, and completes a wait once one contains the text.</summary>
    private sealed class OtlpReceiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly List<(string Path, string Text, TaskCompletionSource Done)> _waits = [];
        private readonly List<(string Path, string Body)> _bodies = [];

        private OtlpReceiver(WebApplication app) => _app = app;

        public Uri Endpoint { get; private set; } = null!;

        public static async Task<OtlpReceiver> StartAsync()
        {
            WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
            WebApplication app = builder.Build();
            var receiver = new OtlpReceiver(app);
            app.MapPost("/v1/{signal}", async (HttpContext http, string signal) =>
            {
                using var body = new MemoryStream();
                await http.Request.Body.CopyToAsync(body);
                receiver.Add(http.Request.Path, Encoding.UTF8.GetString(body.ToArray()));
                return Results.Ok();
            });
            await app.StartAsync();
            receiver.Endpoint = new Uri(app.Urls.First());
            return receiver;
        }

        public Task Received(string path, string text)
        {
            lock (_waits)
            {
                var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (_bodies.Any(b => b.Path == path && b.Body.Contains(text, StringComparison.Ordinal)))
                {
                    done.SetResult();
                }
                else
                {
                    _waits.Add((path, text, done));
                }

                return done.Task;
            }
        }

        private void Add(string path, string body)
        {
            lock (_waits)
            {
                _bodies.Add((path, body));
                foreach (var wait in _waits.Where(w => w.Path == path && body.Contains(w.Text, StringComparison.Ordinal)))
                {
                    wait.Done.TrySetResult();
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
