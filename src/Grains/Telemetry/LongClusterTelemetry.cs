using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using LongCluster.Contracts;

namespace LongCluster.Grains.Telemetry;

/// <summary>
/// The service's one <see cref="Meter"/> and one <see cref="ActivitySource"/>, both named <see cref="Name"/>, and its
/// instruments. Both are process-wide (as Orleans' own are): a process hosting several silos (the embedded local
/// cluster) reports them all to each silo's exporters, so every measurement carries the <c>silo</c> it belongs to.
/// Attributes stay low-cardinality (silo, layout, phase, state, route); sequence ids go on spans, never on metrics.
/// </summary>
public static class LongClusterTelemetry
{
    public const string Name = "LongCluster";

    private static readonly string? Version = typeof(LongClusterTelemetry).Assembly.GetName().Version?.ToString();

    /// <summary>Spans of the API, the coordinator and the shards; Orleans' activity propagation links them into one trace.</summary>
    public static readonly ActivitySource Source = new(Name, Version);

    private static readonly Meter Meter = new(Name, Version);

    private static readonly ConcurrentDictionary<SiloMetrics, byte> Silos = new();

    private static readonly Counter<long> TokensPrefilled = Meter.CreateCounter<long>(
        "longcluster.tokens.prefilled", "{token}", "Tokens whose every layer was prefilled, counted by the silo of the sequence's coordinator.");

    private static readonly Counter<long> TokensDecoded = Meter.CreateCounter<long>(
        "longcluster.tokens.decoded", "{token}", "Tokens decoded through every layer, counted by the silo of the sequence's coordinator.");

    private static readonly Histogram<double> LayerDuration = Meter.CreateHistogram(
        "longcluster.layer.duration", "s", "One shard's time in one prefill layer, by phase: compute, waiting (for the next ring block), all_to_all (Ulysses scatter and gather), transfer (its blocks on the wire, overlapping compute).",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });

    private static readonly Histogram<double> LayerRunDuration = Meter.CreateHistogram(
        "longcluster.layer.run.duration", "s", "A whole prefill layer as its coordinator saw it, from the first shard's start to the last shard's end.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });

    private static readonly Histogram<double> DecodeDuration = Meter.CreateHistogram(
        "longcluster.decode.duration", "s", "One decode step of one layer, as its coordinator saw it.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1] });

    private static readonly Counter<long> BytesExchanged = Meter.CreateCounter<long>(
        "longcluster.exchange.bytes", "By", "Ring-block and all-to-all bytes a silo's shards sent to other shards.");

    private static readonly Counter<long> HttpRequests = Meter.CreateCounter<long>(
        "longcluster.http.requests", "{request}", "Client API requests, by method, route template and status code.");

    static LongClusterTelemetry()
    {
        Meter.CreateObservableGauge(
            "longcluster.kv.resident", () => Silos.Keys.Select(s => new Measurement<long>(s.ResidentBytes, s.SiloTag)), "By",
            "Bytes a silo's shards hold: KV segments of every layer, pending uploads and unread outputs.");
        Meter.CreateObservableGauge(
            "longcluster.kv.device", () => Silos.Keys.Select(s => s.DeviceBytes), "By",
            "Bytes of KV segments the kernel backend keeps where it computes (a GPU's memory); 0 on the CPU backend. One backend per process: in-process silos report the same device.");
        Meter.CreateObservableGauge(
            "longcluster.memory.resident", () => Silos.Keys.Select(s => new Measurement<long>(s.MemoryResidentBytes, s.SiloTag)), "By",
            "Bytes the memory tier's grains on a silo hold in memory: evicted K and V blocks of retrieval sequences and their key sums (Service:MemoryBudgetBytes).");
        Meter.CreateObservableGauge(
            "longcluster.memory.spilled", () => Silos.Keys.Select(s => new Measurement<long>(s.MemorySpilledBytes, s.SiloTag)), "By",
            "Bytes of evicted K and V blocks a silo's memory grains keep in memory-mapped files past Service:MemoryBudgetBytes.");
        Meter.CreateObservableGauge(
            "longcluster.sequences", () => Silos.Keys.SelectMany(s => s.SequencesByState()), "{sequence}",
            "Sequences whose coordinator lives on the silo, by state.");
    }

    /// <summary>A span about one sequence (null when nobody listens); its tags name the sequence, chunk and layer.</summary>
    internal static Activity? StartSequenceActivity(string name, string sequence, int? chunk, int layer, int? shard = null)
    {
        Activity? activity = Source.StartActivity(name);
        if (activity is not null)
        {
            activity.SetTag("longcluster.sequence", sequence);
            activity.SetTag("longcluster.layer", layer);
            if (chunk is { } c)
            {
                activity.SetTag("longcluster.chunk", c);
            }

            if (shard is { } s)
            {
                activity.SetTag("longcluster.shard", s);
            }
        }

        return activity;
    }

    internal static void Register(SiloMetrics silo) => Silos[silo] = 0;

    internal static void Unregister(SiloMetrics silo) => Silos.TryRemove(silo, out _);

    internal static void RecordLayer(string silo, string layout, ShardTimings t)
    {
        LayerDuration.Record(t.ComputeSeconds, Tags(silo, layout, "compute"));
        LayerDuration.Record(t.WaitingSeconds, Tags(silo, layout, "waiting"));
        LayerDuration.Record(t.ScatterSeconds + t.GatherSeconds, Tags(silo, layout, "all_to_all"));
        LayerDuration.Record(t.TransferSeconds, Tags(silo, layout, "transfer"));
        BytesExchanged.Add(t.BytesSent, new KeyValuePair<string, object?>("silo", silo));
    }

    internal static void RecordLayerRun(string silo, string layout, double seconds) =>
        LayerRunDuration.Record(seconds, new("silo", silo), new("layout", layout));

    internal static void RecordPrefilled(string silo, string layout, long tokens) =>
        TokensPrefilled.Add(tokens, new("silo", silo), new("layout", layout));

    internal static void RecordDecode(string silo, string layout, double seconds, bool lastLayer)
    {
        DecodeDuration.Record(seconds, new("silo", silo), new("layout", layout));
        if (lastLayer)
        {
            TokensDecoded.Add(1, new("silo", silo), new("layout", layout));
        }
    }

    /// <summary>One client API request; <paramref name="route"/> is the endpoint's template, or <c>unmatched</c>.</summary>
    public static void RecordRequest(string silo, string method, string route, int status) =>
        HttpRequests.Add(1, new("silo", silo), new("method", method), new("route", route), new("status", status));

    private static TagList Tags(string silo, string layout, string phase) => new() { { "silo", silo }, { "layout", layout }, { "phase", phase } };
}
