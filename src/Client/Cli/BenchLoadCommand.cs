using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Service;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench load</c>: N concurrent clients, each creating, prefilling (in chunks), decoding and deleting
/// sequences of random shapes, masks and layouts, one after another, every output checked against the single-node
/// kernel. Prints each minute what was done and the silos' managed heap and RSS (from their <c>/metrics</c>), then per
/// operation p50/p99, failures by code, and a JSON last line. Exit 0 when no answer was wrong and nothing failed
/// but refusals by a limit (429).
/// </summary>
internal static class BenchLoadCommand
{
    /// <summary>The heap and RSS are read this often (and at the start and the end).</summary>
    private const int SampleSeconds = 60;

    /// <summary>
    /// Between minute marks the silos' memory is read this often, and each minute reports the lowest heap and RSS it
    /// saw. The heap after a GC swings with the garbage waiting for the next gen 2 collection (tens of percent under
    /// this load); its low-water mark over a minute is what the live data holds up, which a leak raises minute after
    /// minute and the GC's sizing does not. The reading at the mark itself is reported too (<c>heap_at_mark_mb</c>).
    /// </summary>
    private const int ProbeSeconds = 5;

    /// <summary>Longest a run may be asked to last: a week.</summary>
    private const double MaxMinutes = 7 * 24 * 60;

    /// <summary>
    /// Deadline of one request: a load sequence's layer takes well under a second, so a request still unanswered after
    /// this is a hang, counted as a timeout rather than holding its client for the SDK's default half hour.
    /// </summary>
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromMinutes(2);

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench load", args, ["endpoint", "token", "local-cluster", "clients", "minutes", "seconds", "seed"], []);
        ClusterChoice cluster = ClusterTarget.Parse(options, "bench load", defaultSilos: 3);
        int clients = options.Int("clients", 8, 1, 1024);
        int seed = options.Int("seed", 1, 0);
        TimeSpan duration = Duration(options);
        using var stop = new StopSignal();
        return RunAsync(new Settings(clients, duration, seed, cluster), stdout, stop.Token).GetAwaiter().GetResult();
    }

    /// <summary><c>--minutes M</c> (fractions allowed) or <c>--seconds S</c>, 10 minutes by default.</summary>
    private static TimeSpan Duration(CommandLine options)
    {
        if (options.Has("minutes") && options.Has("seconds"))
        {
            throw new UsageException("bench load: give --minutes or --seconds, not both");
        }

        if (options.Has("seconds"))
        {
            return TimeSpan.FromSeconds(options.Int("seconds", 0, 1, (int)(MaxMinutes * 60)));
        }

        float minutes = options.Float("minutes") ?? 10;
        return minutes is > 0 and <= (float)MaxMinutes
            ? TimeSpan.FromMinutes(minutes)
            : throw new UsageException(string.Create(CultureInfo.InvariantCulture, $"bench load: --minutes must be a number in (0, {MaxMinutes}], got '{options.Text("minutes")}'"));
    }

    private static async Task<int> RunAsync(Settings settings, TextWriter stdout, CancellationToken stop)
    {
        IAnsiConsole console = CliConsole.For(stdout);
        try
        {
            if (settings.Cluster.Endpoint is null)
            {
                console.WriteLine($"bench load: starting {settings.Cluster.LocalSilos} silos in this process (Orleans development clustering)");
            }

            await using ClusterTarget target = await ClusterTarget.StartAsync(settings.Cluster, stop).ConfigureAwait(false);
            LocalAttentionCluster? local = target.Local;
            LongClusterClientOptions options = target.ClientOptions();
            // Every failure the service gives is counted: a retry that succeeded would hide it.
            options.RequestTimeout = RequestTimeout;
            options.MaxRetries = 0;
            using var sdk = new LongClusterClient(options);
            using var memory = new SiloMemory(new HttpClient { Timeout = TimeSpan.FromSeconds(10) }, target.Token);
            string run = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
            int silos;
            if (local is not null)
            {
                // One process: every silo's /metrics reads the same runtime, so one of them stands for all.
                memory.Add(local.Endpoints[0].ToString());
                silos = local.Silos.Count;
            }
            else
            {
                memory.Add(target.Endpoints[0].ToString());
                silos = await DiscoverAsync(sdk, memory, run, stop).ConfigureAwait(false);
            }

            var load = new Load(settings, sdk, memory, new LoadStats(), run, silos, local is not null);
            return await load.RunAsync(console, stdout, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            console.WriteLine("bench load: stopped by a signal before the load started");
            return CliApp.ExitFailed;
        }
        catch (LongClusterException e)
        {
            throw new IOException($"bench load: the cluster failed the probe sequence ({e.Code}, status {e.Status}): {e.Message}", e);
        }
    }

    /// <summary>Learns a remote cluster's silos from a sequence with one shard per active silo, created and deleted at once.</summary>
    private static async Task<int> DiscoverAsync(LongClusterClient sdk, SiloMemory memory, string run, CancellationToken stop)
    {
        string id = $"load-{run}-probe";
        SequenceInfo info = await sdk.CreateSequenceAsync(new SequenceSpec { Layers = 1, QueryHeads = 1, KeyValueHeads = 1, HeadDim = 16, Shards = 0 }, id, stop).ConfigureAwait(false);
        await sdk.DeleteSequenceAsync(id, stop).ConfigureAwait(false);
        foreach (ShardInfo shard in info.ShardMap)
        {
            memory.Add(shard.Endpoint);
        }

        return info.Shards;
    }

    private sealed record Settings(int Clients, TimeSpan Duration, int Seed, ClusterChoice Cluster);

    /// <summary>One heap and RSS reading: the silos' (from /metrics) and, for in-process silos, this process's own.</summary>
    /// <param name="LocalFullGcHeapMb">This process's live bytes after its last gen 2 GC, whenever that ran: what a leak grows and GC sizing does not.</param>
    /// <param name="HeapMb">The silos' heap at its lowest among the readings of the minute up to this sample (one every <see cref="ProbeSeconds"/>).</param>
    /// <param name="RssMb">The silos' RSS at its lowest among the same readings.</param>
    /// <param name="HeapNowMb">The silos' heap read at this sample's moment.</param>
    /// <param name="RssNowMb">The silos' RSS read at this sample's moment.</param>
    private sealed record Sample(
        double Seconds, long Requests, double? HeapMb, double? RssMb, double? HeapNowMb, double? RssNowMb, Dictionary<string, (double? HeapMb, double? RssMb)> BySilo, double? LocalHeapMb, double? LocalRssMb, double? LocalFullGcHeapMb);

    /// <summary>A run of the load: its clients, its samples, its report.</summary>
    private sealed class Load(Settings settings, LongClusterClient sdk, SiloMemory memory, LoadStats stats, string run, int silos, bool inProcess)
    {
        private readonly List<Sample> _samples = [];
        private long _started;

        public async Task<int> RunAsync(IAnsiConsole console, TextWriter stdout, CancellationToken stop)
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"bench load: {settings.Clients} clients for {settings.Duration.TotalMinutes:0.##} min against {(inProcess ? $"{silos} silos in this process" : $"{settings.Cluster.Endpoint} ({silos} silos)")}; seed {settings.Seed}; " +
                $"sequences of {LoadShape.MinTokens}..{LoadShape.MaxTokens} tokens, every output checked against the single-node kernel"));
            if (inProcess)
            {
                console.WriteLine("  memory: the silos share this process (with the load's clients): one heap and RSS reading stands for all of them");
            }

            _started = Stopwatch.GetTimestamp();
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stop);
            deadline.CancelAfter(settings.Duration);
            Task[] clients = [.. Enumerable.Range(0, settings.Clients).Select(c => Task.Run(() => ClientAsync(c, deadline.Token, stop), CancellationToken.None))];
            if (CliConsole.IsInteractive(stdout))
            {
                await console.Progress()
                    .AutoClear(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                    .StartAsync(async progress =>
                    {
                        ProgressTask bar = progress.AddTask("load", maxValue: settings.Duration.TotalSeconds);
                        Task sampling = SampleEachMinuteAsync(console, clients, stop);
                        while (!sampling.IsCompleted)
                        {
                            bar.Value = Math.Min(Elapsed, settings.Duration.TotalSeconds);
                            bar.Description = Markup.Escape(string.Create(CultureInfo.InvariantCulture, $"{stats.Requests} requests, {stats.Wrong} wrong, {stats.Errors} errors"));
                            await Task.WhenAny(sampling, Task.Delay(500, CancellationToken.None)).ConfigureAwait(false);
                        }

                        await sampling.ConfigureAwait(false);
                    }).ConfigureAwait(false);
            }
            else
            {
                await SampleEachMinuteAsync(console, clients, stop).ConfigureAwait(false);
            }

            Report(console, stdout, stop.IsCancellationRequested);
            return stats.Wrong == 0 && stats.Errors == 0 ? CliApp.ExitOk : CliApp.ExitFailed;
        }

        private double Elapsed => Stopwatch.GetElapsedTime(_started).TotalSeconds;

        /// <summary>The silos' heap and RSS together (null unless every silo gave its figure).</summary>
        private static (double? Heap, double? Rss) Total(Dictionary<string, (double? HeapMb, double? RssMb)> bySilo) => (
            bySilo.Values.All(s => s.HeapMb is not null) ? bySilo.Values.Sum(s => s.HeapMb) : null,
            bySilo.Values.All(s => s.RssMb is not null) ? bySilo.Values.Sum(s => s.RssMb) : null);

        /// <summary>Reads memory at the start, after every minute and at the end (or at a stop signal), then waits for the clients.</summary>
        private async Task SampleEachMinuteAsync(IAnsiConsole console, Task[] clients, CancellationToken stop)
        {
            double end = settings.Duration.TotalSeconds;
            double[] marks = [.. Enumerable.Range(0, (int)Math.Ceiling(end / SampleSeconds)).Select(m => (double)(m * SampleSeconds)).Append(end)];
            var window = new List<(double? Heap, double? Rss)>();
            foreach (double mark in marks)
            {
                try
                {
                    while (mark - Elapsed > ProbeSeconds)
                    {
                        await Task.Delay(TimeSpan.FromSeconds(ProbeSeconds), stop).ConfigureAwait(false);
                        window.Add(Total((await memory.ReadAsync(CancellationToken.None).ConfigureAwait(false)).Silos));
                    }

                    await Task.Delay(TimeSpan.FromSeconds(Math.Max(0, mark - Elapsed)), stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                await SampleAsync(console, window).ConfigureAwait(false);
                window.Clear();
            }

            await Task.WhenAll(clients).ConfigureAwait(false);
            if (stop.IsCancellationRequested)
            {
                console.WriteLine("bench load: stopped by a signal");
                await SampleAsync(console, window).ConfigureAwait(false);
            }
        }

        /// <summary>Reads memory; not cancelled by a stop signal, which still wants its figures (each silo's answer is bounded by the scraper's timeout).</summary>
        /// <param name="window">The readings since the last sample, for the minute's low-water marks.</param>
        private async Task SampleAsync(IAnsiConsole console, List<(double? Heap, double? Rss)> window)
        {
            double seconds = Elapsed;
            long requests = stats.Requests;
            (Dictionary<string, (double? HeapMb, double? RssMb)> bySilo, List<string> notes) = await memory.ReadAsync(CancellationToken.None).ConfigureAwait(false);
            foreach (string note in notes)
            {
                console.WriteLine($"  {note}");
            }

            (double? heapNow, double? rssNow) = Total(bySilo);
            (double? Heap, double? Rss)[] readings = [.. window, (heapNow, rssNow)];
            double? heap = readings.All(r => r.Heap is not null) ? readings.Min(r => r.Heap) : null;
            double? rss = readings.All(r => r.Rss is not null) ? readings.Min(r => r.Rss) : null;
            // The figures .NET's "System.Runtime" meter reports, read in this process: the generations' sizes after the last GC, and the working set.
            double? localHeap = inProcess ? GC.GetGCMemoryInfo().GenerationInfo.ToArray().Sum(g => g.SizeAfterBytes) / 1e6 : null;
            double? localRss = inProcess ? Environment.WorkingSet / 1e6 : null;
            // The last gen 2 GC, blocking or background (workstation GC runs most of them in the background).
            GCMemoryInfo blocking = GC.GetGCMemoryInfo(GCKind.FullBlocking);
            GCMemoryInfo background = GC.GetGCMemoryInfo(GCKind.Background);
            GCMemoryInfo full = background.Index > blocking.Index ? background : blocking;
            // Live bytes: the generations' sizes less the free space left in them (fragmentation), which a leak does not make.
            double? localFull = inProcess && full.Index > 0 ? full.GenerationInfo.ToArray().Sum(g => g.SizeAfterBytes - g.FragmentationAfterBytes) / 1e6 : null;
            int gen2 = GC.CollectionCount(2);
            var sample = new Sample(seconds, requests, heap, rss, heapNow, rssNow, bySilo, localHeap, localRss, localFull);
            long previous;
            double since;
            lock (_samples)
            {
                previous = _samples.Count == 0 ? 0 : _samples[^1].Requests;
                since = _samples.Count == 0 ? 0 : seconds - _samples[^1].Seconds;
                _samples.Add(sample);
            }

            string when = _samples.Count == 1 ? "start" : string.Create(CultureInfo.InvariantCulture, $"{seconds / 60:0.00} min");
            string line = string.Create(CultureInfo.InvariantCulture,
                $"  {when,9}: {requests} requests ({(since > 0 ? (requests - previous) / since : 0):0.0}/s), {stats.Sequences} sequences, {stats.Wrong} wrong, {stats.Errors} errors, {stats.Refused} refused; silos: heap {Mb(heapNow)} (lowest this minute {Mb(heap)}), RSS {Mb(rssNow)} (lowest {Mb(rss)})");
            if (inProcess)
            {
                line += string.Create(CultureInfo.InvariantCulture, $"; this process (local reading): heap {Mb(localHeap)}, RSS {Mb(localRss)}, live after the last gen 2 GC {Mb(localFull)} ({gen2} gen 2 GCs so far)");
            }

            console.WriteLine(line);
        }

        private async Task ClientAsync(int client, CancellationToken deadline, CancellationToken stop)
        {
            // Each client its own seeded stream: the same seed picks the same sequences, whatever the others do.
            var random = new Random((settings.Seed * 7919) + client);
            for (int n = 0; !deadline.IsCancellationRequested; n++)
            {
                LoadShape shape = LoadShape.Pick(random, silos);
                int dataSeed = random.Next();
                try
                {
                    await SequenceAsync($"load-{run}-{client}-{n}", shape, dataSeed, stop).ConfigureAwait(false);
                }
                catch (LoadFailure)
                {
                    // Recorded; the next sequence starts afresh.
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }
        }

        /// <summary>One sequence end to end: create, every chunk through every layer, the decode steps, delete; each output checked.</summary>
        private async Task SequenceAsync(string id, LoadShape shape, int dataSeed, CancellationToken stop)
        {
            SequenceSpec spec = shape.Spec;
            DType dtype = DTypes.TryParseFloat(spec.DType, out DType parsed) ? parsed : DType.F32;
            int total = shape.TotalTokens;
            int hq = spec.QueryHeads;
            int rowO = hq * spec.HeadDim;
            var layers = Enumerable.Range(0, spec.Layers).Select(l => (
                Q: TensorChecks.Synthetic(dtype, dataSeed + (3 * l), total, hq, spec.HeadDim),
                K: TensorChecks.Synthetic(dtype, dataSeed + (3 * l) + 1, total, spec.KeyValueHeads, spec.HeadDim),
                V: TensorChecks.Synthetic(dtype, dataSeed + (3 * l) + 2, total, spec.KeyValueHeads, spec.HeadDim))).ToArray();
            // Every token's row, prompt and decoded, from one call of the kernel over the whole sequence: chunks and
            // decode steps must give the same numbers.
            AttentionMask mask = AttentionMask.Parse(spec.Mask);
            long[] positions = [.. Enumerable.Range(0, total).Select(i => (long)i)];
            var expected = layers.Select(layer =>
            {
                var o = new float[(long)total * rowO];
                var lse = new float[(long)total * hq];
                TensorChecks.Forward(
                    CpuBackend.Instance, layer.Q, layer.K, layer.V, new AttentionShape(total, total, hq, spec.KeyValueHeads, spec.HeadDim), mask,
                    new AttentionTokens(positions, positions, shape.Documents, shape.Documents), o, lse, new AttentionOptions { MaxThreads = 1 });
                return (O: o, Lse: lse);
            }).ToArray();

            string what = $"sequence {id} ({shape})";
            SequenceInfo info = await stats.TimeAsync("create", id, () => sdk.CreateSequenceAsync(spec, id, stop), stop).ConfigureAwait(false);
            if (!inProcess)
            {
                foreach (ShardInfo shard in info.ShardMap)
                {
                    memory.Add(shard.Endpoint);
                }
            }

            bool deleted = false;
            try
            {
                int first = 0;
                for (int c = 0; c < shape.Chunks.Length; c++)
                {
                    int start = first;
                    int count = shape.Chunks[c];
                    int[]? documents = shape.Documents?[start..(start + count)];
                    ChunkPlan plan = await stats.TimeAsync("chunk", id, () => sdk.BeginChunkAsync(id, new ChunkRequest(count, documents), stop), stop).ConfigureAwait(false);
                    for (int l = 0; l < spec.Layers; l++)
                    {
                        int layer = l;
                        var input = new LayerInput(DemoCommand.Rows(layers[l].Q, start, count), DemoCommand.Rows(layers[l].K, start, count), DemoCommand.Rows(layers[l].V, start, count));
                        await stats.TimeAsync("upload", id, () => sdk.UploadLayerAsync(plan, layer, input, null, spec.Layers, stop), stop).ConfigureAwait(false);
                        await stats.TimeAsync("run", id, () => sdk.RunLayerAsync(id, plan.Index, layer, stop), stop).ConfigureAwait(false);
                        (float[] o, float[] lse) = await stats.TimeAsync("read", id, () => sdk.ReadOutputAsync(plan, layer, spec, stop), stop).ConfigureAwait(false);
                        stats.Check(
                            $"{what}: chunk {c} (tokens {start}..{start + count - 1}), layer {l}",
                            expected[l].O.AsSpan(start * rowO, count * rowO), o, expected[l].Lse.AsSpan(start * hq, count * hq), lse, DemoCommand.Tolerance);
                    }

                    first += count;
                }

                for (int t = first; t < total; t++)
                {
                    for (int l = 0; l < spec.Layers; l++)
                    {
                        (int token, int layer) = (t, l);
                        DecodeOutput step = await stats.TimeAsync(
                            "decode",
                            id,
                            () => sdk.DecodeAsync(
                                id, layer, DemoCommand.Rows(layers[layer].Q, token, 1), DemoCommand.Rows(layers[layer].K, token, 1), DemoCommand.Rows(layers[layer].V, token, 1), shape.Documents?[token], stop),
                            stop).ConfigureAwait(false);
                        if (step.Position != t)
                        {
                            stats.AddWrong($"{what}: decode of token {t}, layer {l}: the service says position {step.Position}");
                        }

                        stats.Check(
                            $"{what}: decode of token {t}, layer {l}",
                            expected[l].O.AsSpan(t * rowO, rowO), step.Output, expected[l].Lse.AsSpan(t * hq, hq), step.LogSumExp, DemoCommand.Tolerance);
                    }
                }

                await stats.TimeAsync("delete", id, () => sdk.DeleteSequenceAsync(id, stop), stop).ConfigureAwait(false);
                deleted = true;
                stats.SequenceDone();
            }
            finally
            {
                if (!deleted)
                {
                    await CleanUpAsync(id).ConfigureAwait(false);
                }
            }
        }

        /// <summary>Deletes a sequence given up on (after a failure or a stop signal), so a run leaves nothing behind; not counted.</summary>
        private async Task CleanUpAsync(string id)
        {
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try
            {
                await sdk.DeleteSequenceAsync(id, limit.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is LongClusterException or OperationCanceledException)
            {
                // Already gone, or the cluster cannot be reached: the failure that led here is what counts.
            }
        }

        private void Report(IAnsiConsole console, TextWriter stdout, bool stopped)
        {
            double seconds = Elapsed;
            double rps = stats.Requests / seconds;
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"bench load: {seconds:0.0} s{(stopped ? " (stopped by a signal)" : "")}, {settings.Clients} clients: {stats.Requests} requests ({rps:0.0}/s), {stats.Sequences} sequences complete, " +
                $"{stats.Checked} outputs checked: {stats.Wrong} wrong, {stats.Errors} errors, {stats.Refused} refused"));

            SortedDictionary<string, (int Count, double P50Ms, double P99Ms)> ops = stats.Latencies();
            Table table = CliConsole.Table(console, "operation", ">count", ">p50 ms", ">p99 ms");
            foreach ((string op, (int count, double p50, double p99)) in ops)
            {
                table.AddRow(op, count.ToString(CultureInfo.InvariantCulture), p50.ToString("0.0", CultureInfo.InvariantCulture), p99.ToString("0.0", CultureInfo.InvariantCulture));
            }

            console.Write(table);
            SortedDictionary<string, int> failures = stats.FailuresByCode();
            if (failures.Count > 0)
            {
                Table byCode = CliConsole.Table(console, "failure", "counted as", ">count");
                foreach ((string code, int count) in failures)
                {
                    byCode.AddRow(Markup.Escape(code), code.StartsWith("429", StringComparison.Ordinal) ? "refused" : "error", count.ToString(CultureInfo.InvariantCulture));
                }

                console.Write(byCode);
            }

            foreach (string example in stats.ErrorExamples())
            {
                console.WriteLine($"  error: {example}");
            }

            foreach (string example in stats.WrongExamples())
            {
                console.WriteLine($"  wrong: {example}");
            }

            Sample[] samples;
            lock (_samples)
            {
                samples = [.. _samples];
            }

            var result = new Dictionary<string, object?>
            {
                ["clients"] = settings.Clients,
                ["minutes"] = Math.Round(settings.Duration.TotalMinutes, 4),
                ["seconds"] = Math.Round(seconds, 1),
                ["stopped"] = stopped,
                ["cluster"] = inProcess ? "in-process" : settings.Cluster.Endpoint!.ToString(),
                ["silos"] = silos,
                ["seed"] = settings.Seed,
                ["requests"] = stats.Requests,
                ["rps"] = Math.Round(rps, 2),
                ["sequences"] = stats.Sequences,
                ["checked"] = stats.Checked,
                ["wrong"] = stats.Wrong,
                ["errors"] = stats.Errors,
                ["refused"] = stats.Refused,
                ["errors_by_code"] = failures,
                ["ops"] = ops.ToDictionary(o => o.Key, o => new Dictionary<string, object>
                {
                    ["count"] = o.Value.Count,
                    ["p50_ms"] = Math.Round(o.Value.P50Ms, 2),
                    ["p99_ms"] = Math.Round(o.Value.P99Ms, 2),
                }),
                ["sample_s"] = samples.Select(s => Math.Round(s.Seconds, 1)).ToArray(),
                ["heap_mb"] = samples.Select(s => Round(s.HeapMb)).ToArray(),
                ["rss_mb"] = samples.Select(s => Round(s.RssMb)).ToArray(),
                ["heap_at_mark_mb"] = samples.Select(s => Round(s.HeapNowMb)).ToArray(),
                ["rss_at_mark_mb"] = samples.Select(s => Round(s.RssNowMb)).ToArray(),
                ["silo_heap_mb"] = memory.Silos.ToDictionary(s => s, s => samples.Select(x => Round(x.BySilo.GetValueOrDefault(s).HeapMb)).ToArray()),
                ["silo_rss_mb"] = memory.Silos.ToDictionary(s => s, s => samples.Select(x => Round(x.BySilo.GetValueOrDefault(s).RssMb)).ToArray()),
            };
            if (inProcess)
            {
                result["local_heap_mb"] = samples.Select(s => Round(s.LocalHeapMb)).ToArray();
                result["local_rss_mb"] = samples.Select(s => Round(s.LocalRssMb)).ToArray();
                result["local_gen2_live_mb"] = samples.Select(s => Round(s.LocalFullGcHeapMb)).ToArray();
            }

            stdout.WriteLine(JsonSerializer.Serialize(result, Json));
        }

        private static double? Round(double? value) => value is { } v ? Math.Round(v, 1) : null;

        private static string Mb(double? value) => value is { } v ? v.ToString("0.0", CultureInfo.InvariantCulture) + " MB" : "n/a";
    }
}
