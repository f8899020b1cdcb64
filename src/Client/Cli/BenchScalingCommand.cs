using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using LongCluster.Cli.Processes;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Service;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench scaling</c>: for each silo count P, a cluster of P <c>longcluster-silo</c> processes (Redis
/// membership, mutual TLS), each pinned to its share of this machine's cores; for each layout, a sequence prefilled
/// through the SDK, every layer checked against the single-node kernel, the service's own layer time and the split of
/// its slowest shard. With <c>--link RATE:LATENCY</c> the silos run in network namespaces joined by shaped veth links
/// (<see cref="SiloNetwork"/>). Prints a table and, last, a JSON line of the points.
/// <para>
/// <c>--kill-silo-after-layers N</c> (for tests) kills the last silo of the first point once N layers are done: the
/// run must report it, leave no process or namespace behind, and exit 1.
/// </para>
/// </summary>
internal static class BenchScalingCommand
{
    /// <summary>Query rows of the warm-up call that compiles the kernel in this process before the baseline is timed.</summary>
    private const int WarmUpTokens = 256;

    private static readonly TimeSpan StartTimeout = TimeSpan.FromMinutes(2);

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = false };

    /// <summary><c>--model calibrate</c> (the default): the profile measured by <c>plan --calibrate</c>'s measurement at the start of the run.</summary>
    private const string Calibrate = "calibrate";

    /// <param name="predict">
    /// A cost model's predicted layer time in ms for a point (null where it has none); when given, the table and every
    /// JSON point carry <c>predicted_ms</c> beside the measurement.
    /// </param>
    public static int Run(string[] args, TextWriter stdout, Func<ScalingPoint, double?>? predict = null)
    {
        CommandLine options = CommandLine.Parse(
            "bench scaling", args, ["tokens", "layouts", "silos", "link", "layers", "hq", "hkv", "d", "dtype", "mask", "seed", "kill-silo-after-layers", "model"], []);
        int tokens = options.Int("tokens", 65536, 1);
        int layers = options.Int("layers", 2, 2, SequenceSpec.MaxLayers);
        (int hq, int hkv) = options.Heads(8, 2);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        DType dtype = options.FloatType("dtype", "f32");
        AttentionMask mask = options.Mask("causal");
        int seed = options.Int("seed", 1, 0);
        int[] silos = SiloCounts(options.Text("silos") ?? "1,2,4");
        ContextLayout[] layouts = Layouts(options.Text("layouts") ?? "zigzag,striped,contiguous,ulysses,hybrid:2");
        LinkShape? link = null;
        if (options.Text("link") is { } text)
        {
            try
            {
                link = LinkShape.Parse(text);
            }
            catch (FormatException e)
            {
                throw new UsageException($"bench scaling: --link: {e.Message}");
            }
        }

        string model = options.Text("model") ?? Calibrate;
        if (predict is null && model is not "none")
        {
            try
            {
                HardwareProfile profile = model == Calibrate ? ProfileCalibration.Measure(stdout) : HardwareProfile.Load(model);
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  model: profile {profile.Name}{(model == Calibrate ? " (calibrated now, before any silo starts)" : "")}: kernel {profile.KernelGflops:G4} GFLOP/s{(profile.SharedHost ? $" for the host ({(profile.HostCores > 0 ? profile.HostCores.ToString(CultureInfo.InvariantCulture) : "?")} cores)" : " per node")}, transport {(profile.TransportGbitPerSecond > 0 ? $"{profile.TransportGbitPerSecond:G4} Gbit/s" : "free")}, link {profile.LinkGbitPerSecond:G4} Gbit/s{(profile.LinkShared ? " shared" : "")}, {profile.LinkLatencyMicroseconds:G4} us"));
                predict = ScalingPrediction.From(profile);
            }
            catch (HardwareProfileException e)
            {
                throw new UsageException($"bench scaling: --model: {e.Message}");
            }
        }

        int? kill = options.Has("kill-silo-after-layers") ? options.Int("kill-silo-after-layers", 0, 1, layers - 1) : null;
        var settings = new Settings(tokens, layers, hq, hkv, d, dtype, mask, seed, silos, layouts, link, kill);
        using var stop = new StopSignal();
        return new Harness(settings, CliConsole.For(stdout), stdout, predict).RunAsync(stop.Token).GetAwaiter().GetResult();
    }

    /// <summary><c>--silos 1,2,4</c>: distinct counts in 1..64, run in the order given.</summary>
    private static int[] SiloCounts(string text)
    {
        string[] items = text.Split(',', StringSplitOptions.TrimEntries);
        var counts = new List<int>();
        foreach (string item in items)
        {
            if (!int.TryParse(item, NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count is < 1 or > 64)
            {
                throw new UsageException($"bench scaling: --silos takes a comma-separated list of silo counts in 1..64, got '{item}' in '{text}'");
            }

            if (counts.Contains(count))
            {
                throw new UsageException($"bench scaling: --silos lists {count} twice");
            }

            counts.Add(count);
        }

        return [.. counts];
    }

    /// <summary><c>--layouts zigzag,striped,...</c>: distinct layouts, run in the order given.</summary>
    private static ContextLayout[] Layouts(string text)
    {
        var layouts = new List<ContextLayout>();
        foreach (string item in text.Split(',', StringSplitOptions.TrimEntries))
        {
            ContextLayout layout;
            try
            {
                layout = ContextLayout.Parse(item);
            }
            catch (FormatException e)
            {
                throw new UsageException($"bench scaling: --layouts: {e.Message}");
            }

            if (layouts.Any(l => l.ToString() == layout.ToString()))
            {
                throw new UsageException($"bench scaling: --layouts lists {layout} twice");
            }

            layouts.Add(layout);
        }

        return [.. layouts];
    }

    private sealed record Settings(
        int Tokens, int Layers, int QueryHeads, int KeyValueHeads, int HeadDim, DType DType, AttentionMask Mask, int Seed, int[] Silos, ContextLayout[] Layouts, LinkShape? Link, int? KillAfterLayers)
    {
        public string DTypeName => DType.SafetensorsName().ToLowerInvariant();
    }

    /// <summary>A measured point: the service's layer times, the split of the median timed layer's slowest shard, the check.</summary>
    private sealed record Measured(
        ScalingPoint Point, double[] LayerMs, double MeasuredMs, ShardTimings Slowest, double BaselineMs, double AllCoresMs, double ErrorO, double ErrorLse, double? PredictedMs)
    {
        public bool Ok => ErrorO <= DemoCommand.Tolerance && ErrorLse <= DemoCommand.Tolerance;

        /// <summary>Baseline (the kernel on one silo's share of the cores) over P times the layer time: 1 is a perfect split.</summary>
        public double Efficiency => BaselineMs / (Point.Silos * MeasuredMs);

        /// <summary>The kernel on all of this machine's cores over the layer time: the cluster's speed against one node with every core.</summary>
        public double VersusAllCores => AllCoresMs / MeasuredMs;
    }

    private sealed record Skipped(int Silos, string Layout, string Reason);

    /// <summary>One run of the benchmark: its reference, its network, its clusters, its results.</summary>
    private sealed class Harness(Settings settings, IAnsiConsole console, TextWriter stdout, Func<ScalingPoint, double?>? predict)
    {
        private readonly List<Measured> _measured = [];
        private readonly List<Skipped> _skipped = [];
        private readonly int[] _cores = AllowedCores();
        private readonly Dictionary<int, double> _baselineMs = [];
        private HostTensor _q = null!;
        private HostTensor _k = null!;
        private HostTensor _v = null!;
        private int[]? _documents;
        private float[] _expectedO = [];
        private float[] _expectedLse = [];
        private bool _pinned;
        private SiloNetwork? _network;
        private string _linkApplied = "loopback";
        private bool _killed;

        public async Task<int> RunAsync(CancellationToken stop)
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"bench scaling: {settings.Tokens} tokens x {settings.Layers} layers, {settings.QueryHeads}:{settings.KeyValueHeads} GQA, d = {settings.HeadDim}, {settings.DTypeName}, {settings.Mask}; " +
                $"silos {string.Join(",", settings.Silos)}; layouts {string.Join(",", settings.Layouts.Select(l => l.ToString()))}; harness pid {Environment.ProcessId}"));
            string? failure = null;
            DirectoryInfo credentials = Directory.CreateTempSubdirectory("lc-tls-");
            try
            {
                _pinned = CanPin();
                console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  cores: {_cores.Length} ({string.Join(",", _cores)}); each of P silos gets {(_pinned ? "its own" : "(not pinned: taskset is missing)")} {_cores.Length}/P of them (at least one) and as many kernel threads (Service:KernelThreads)"));
                Reference(stop);
                SetUpLink();
                ClusterCertificates authority = ClusterCertificates.Create(credentials.FullName);
                foreach (int silos in settings.Silos)
                {
                    stop.ThrowIfCancellationRequested();
                    await RunClusterAsync(silos, authority, stop).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                failure = "stopped by a signal";
            }
            catch (LongClusterException e)
            {
                // The first line: a silo's message may carry the inner exception's stack after it.
                failure = string.Create(CultureInfo.InvariantCulture, $"the cluster failed a request ({e.Code}, status {e.Status}): {FirstLine(e.Message)}");
            }
            catch (Exception e) when (e is IOException or InvalidOperationException or TimeoutException or HttpRequestException or OperationCanceledException)
            {
                failure = FirstLine(e.Message);
            }
            finally
            {
                _network?.Dispose();
                credentials.Delete(recursive: true);
            }

            if (failure is not null)
            {
                console.WriteLine($"bench scaling: FAILED: {failure}");
                console.WriteLine("  every silo process and redis-server of the run stopped" + (_network is null ? "" : "; its network namespaces and bridge removed"));
            }

            Report(failure);
            return failure is null && _measured.All(m => m.Ok) ? CliApp.ExitOk : CliApp.ExitFailed;
        }

        /// <summary>
        /// The single-node kernel in this process on the same input: its output checks every layer of every point (all
        /// layers get the same Q, K and V), and its times are the baselines: all cores, and each silo's share.
        /// </summary>
        private void Reference(CancellationToken stop)
        {
            _q = TensorChecks.Synthetic(settings.DType, settings.Seed, settings.Tokens, settings.QueryHeads, settings.HeadDim);
            _k = TensorChecks.Synthetic(settings.DType, settings.Seed + 1, settings.Tokens, settings.KeyValueHeads, settings.HeadDim);
            _v = TensorChecks.Synthetic(settings.DType, settings.Seed + 2, settings.Tokens, settings.KeyValueHeads, settings.HeadDim);
            _documents = settings.Mask.Document ? [.. Enumerable.Range(0, settings.Tokens).Select(t => t / 1024)] : null;
            var shape = new AttentionShape(settings.Tokens, settings.Tokens, settings.QueryHeads, settings.KeyValueHeads, settings.HeadDim);
            _expectedO = new float[shape.QueryElements];
            _expectedLse = new float[shape.LseElements];
            int warm = Math.Min(WarmUpTokens, settings.Tokens);
            Forward(DemoCommand.Rows(_q, 0, warm), DemoCommand.Rows(_k, 0, warm), DemoCommand.Rows(_v, 0, warm), 0);
            // Each baseline is the faster of two runs (the reference run one of those on all cores): on a shared machine
            // the less disturbed one.
            double reference = Forward(_q, _k, _v, _cores.Length, _expectedO, _expectedLse);
            foreach (int threads in settings.Silos.Select(ThreadsPerSilo).Prepend(_cores.Length).Distinct())
            {
                stop.ThrowIfCancellationRequested();
                double first = threads == _cores.Length ? reference : Forward(_q, _k, _v, threads);
                _baselineMs[threads] = Math.Min(first, Forward(_q, _k, _v, threads));
            }

            console.WriteLine("  single-node kernel in this process (after a warm-up call; the faster of two runs), the reference and the baseline: " +
                string.Join(", ", _baselineMs.OrderByDescending(b => b.Key).Select(b => string.Create(CultureInfo.InvariantCulture, $"{b.Key} thread{(b.Key == 1 ? "" : "s")} {b.Value:F1} ms"))));
        }

        /// <summary>Runs the forward kernel on all the rows given with <paramref name="threads"/> threads (0: all cores), into O and LSE when given; returns ms.</summary>
        private double Forward(HostTensor q, HostTensor k, HostTensor v, int threads, float[]? o = null, float[]? lse = null)
        {
            int rows = (int)q.Shape[0];
            long[] positions = [.. Enumerable.Range(0, rows).Select(i => (long)i)];
            var shape = new AttentionShape(rows, rows, settings.QueryHeads, settings.KeyValueHeads, settings.HeadDim);
            int[] documents = _documents is null ? [] : _documents[..rows];
            o ??= new float[shape.QueryElements];
            lse ??= new float[shape.LseElements];
            long started = Stopwatch.GetTimestamp();
            TensorChecks.Forward(CpuBackend.Instance, q, k, v, shape, settings.Mask, new AttentionTokens(positions, positions, documents, documents), o, lse, new AttentionOptions { MaxThreads = threads });
            return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        }

        /// <summary>
        /// Cleans what a crashed run left (where it may: root, iproute2) and, with <c>--link</c>, makes the namespaces
        /// for the largest cluster; without root or iproute2, or if the kernel refuses, says so and stays on loopback.
        /// </summary>
        private void SetUpLink()
        {
            string? why = SiloNetwork.Unavailable();
            if (why is null)
            {
                foreach (string stale in SiloNetwork.RemoveStale())
                {
                    console.WriteLine($"  cleaned up {stale}, left by an earlier bench scaling that did not finish");
                }
            }

            if (settings.Link is not { } link)
            {
                console.WriteLine("  link: loopback (127.0.0.1), unshaped");
                return;
            }

            if (why is not null)
            {
                console.WriteLine($"  link {link.Text}: cannot shape it ({why}); running on loopback (127.0.0.1), unshaped");
                _linkApplied = $"loopback: {why}";
                return;
            }

            try
            {
                _network = SiloNetwork.Create(settings.Silos.Max(), link);
            }
            catch (InvalidOperationException e)
            {
                console.WriteLine($"  link {link.Text}: could not make network namespaces ({e.Message}); running on loopback (127.0.0.1), unshaped");
                _linkApplied = "loopback: " + e.Message;
                return;
            }

            _linkApplied = _network.Shaping;
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  link {link.Text}: {_network.Silos} network namespaces ({_network.Namespace(0)}..), veth pairs to bridge {_network.BridgeAddress} (Redis, client); each silo's outgoing veth shaped: {_network.Shaping}"));
        }

        private int ThreadsPerSilo(int silos) => Math.Max(1, _cores.Length / silos);

        /// <summary>Cores of silo i of P: a contiguous 1/P of this process's cores, or, with more silos than cores, core i mod C.</summary>
        private int[] CoresOf(int silo, int silos) => silos <= _cores.Length
            ? _cores[(silo * _cores.Length / silos)..((silo + 1) * _cores.Length / silos)]
            : [_cores[silo % _cores.Length]];

        private SiloLaunch Launch(int silo, int silos)
        {
            var prefix = new List<string>();
            if (_network is not null)
            {
                prefix.AddRange(["ip", "netns", "exec", _network.Namespace(silo)]);
            }

            if (_pinned)
            {
                prefix.AddRange(["taskset", "-c", string.Join(",", CoresOf(silo, silos))]);
            }

            return new SiloLaunch(
                _network?.SiloAddress(silo) ?? "127.0.0.1",
                prefix,
                new Dictionary<string, string> { ["Service:KernelThreads"] = ThreadsPerSilo(silos).ToString(CultureInfo.InvariantCulture) });
        }

        private async Task RunClusterAsync(int silos, ClusterCertificates authority, CancellationToken stop)
        {
            string token = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            string clusterId = string.Create(CultureInfo.InvariantCulture, $"scaling-{Environment.ProcessId}-{silos}");
            var clusterSettings = new Dictionary<string, string> { ["ClusterId"] = clusterId, ["ServiceId"] = clusterId, ["Service:ApiToken"] = token };
            await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(
                silos, Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll"), clusterSettings, StartTimeout, authority, i => Launch(i, silos), _network?.BridgeAddress ?? "127.0.0.1")
                .ConfigureAwait(false); // not cancelled by a signal: abandoned half-started, its processes would outlive the run; it is bounded by StartTimeout
            console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {silos} silo{(silos == 1 ? "" : "s")}: redis-server pid {cluster.Redis.ProcessId} at {cluster.Redis.Endpoint}"));
            for (int i = 0; i < silos; i++)
            {
                console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"    silo {i} pid {cluster.Silos[i].ProcessId} at {cluster.Silos[i].HttpEndpoint}{(_pinned ? $", cpus {string.Join(",", CoresOf(i, silos))}" : "")}, {ThreadsPerSilo(silos)} kernel thread(s){(_network is null ? "" : $", netns {_network.Namespace(i)}")}"));
            }

            using var client = new LongClusterClient(new LongClusterClientOptions
            {
                Endpoints = [.. cluster.Silos.Select(s => s.HttpEndpoint!)],
                Token = token,
                MaxRetries = 0, // a benchmark reports a failure; a retry would hide it and time something else
            });
            if (settings.Layouts.FirstOrDefault(l => Unrunnable(l, silos) is null) is { } first)
            {
                await WarmUpAsync(client, silos, first, stop).ConfigureAwait(false);
            }

            foreach (ContextLayout layout in settings.Layouts)
            {
                stop.ThrowIfCancellationRequested();
                if (Unrunnable(layout, silos) is { } reason)
                {
                    _skipped.Add(new Skipped(silos, layout.ToString(), reason));
                    console.WriteLine($"    {layout}: skipped: {reason}");
                    continue;
                }

                _measured.Add(await MeasureAsync(client, cluster, silos, layout, stop).ConfigureAwait(false));
            }

            int[] codes = await cluster.StopAsync(TimeSpan.FromSeconds(60)).WaitAsync(stop).ConfigureAwait(false);
            if (codes.Any(c => c != 0))
            {
                console.WriteLine($"    silos exited with codes {string.Join(", ", codes)} after SIGTERM (0 expected)");
            }
        }

        /// <summary>Why a layout cannot run on P shards with these heads (the Ulysses degree must divide them, ...), or null.</summary>
        private string? Unrunnable(ContextLayout layout, int silos)
        {
            try
            {
                _ = new LayoutPlan(layout, silos, 0, settings.QueryHeads, settings.KeyValueHeads);
                return null;
            }
            catch (ArgumentException e)
            {
                return e.Message[..(e.Message.IndexOf(" (Parameter", StringComparison.Ordinal) is int end and >= 0 ? end : e.Message.Length)];
            }
        }

        private SequenceSpec Spec(ContextLayout layout, int silos) => new()
        {
            Layers = settings.Layers, QueryHeads = settings.QueryHeads, KeyValueHeads = settings.KeyValueHeads, HeadDim = settings.HeadDim, DType = settings.DTypeName,
            Layout = layout.ToString(), Mask = settings.Mask.ToString(), Shards = silos,
        };

        /// <summary>
        /// One untimed prefill of <paramref name="layout"/> (all layers) on a fresh cluster before its points. Without
        /// it the first point of each cluster ran slower in every layer, not only its warm-up layer 0 (2 silos, 16384
        /// tokens, 2026-12-01: striped 1821 ms as the first layout, 1578 ms after zigzag; zigzag 1807 ms first, 1537 ms
        /// after striped): the silos' code reaches its optimized tiers, their pools fill, their connections open.
        /// </summary>
        private async Task WarmUpAsync(LongClusterClient client, int silos, ContextLayout layout, CancellationToken stop)
        {
            string id = $"scaling-{silos}-warm-up";
            var input = new LayerInput(_q, _k, _v);
            long started = Stopwatch.GetTimestamp();
            await client.CreateAndPrefillAsync(Spec(layout, silos), id, settings.Tokens, (_, _) => input, _documents, cancellationToken: stop).ConfigureAwait(false);
            await client.DeleteSequenceAsync(id, stop).ConfigureAwait(false);
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    warm-up: {layout}, {settings.Layers} layers, {Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s (not timed)"));
        }

        private async Task<Measured> MeasureAsync(LongClusterClient client, SiloProcessCluster cluster, int silos, ContextLayout layout, CancellationToken stop)
        {
            SequenceSpec spec = Spec(layout, silos);
            string id = $"scaling-{silos}-{layout.ToString().Replace(':', '-')}";
            var input = new LayerInput(_q, _k, _v);
            (SequenceInfo _, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(
                spec,
                id,
                settings.Tokens,
                (layer, _) =>
                {
                    if (layer == settings.KillAfterLayers && !_killed)
                    {
                        _killed = true;
                        SiloProcess victim = cluster.Silos[^1];
                        victim.Kill();
                        victim.ExitCodeAsync(TimeSpan.FromSeconds(30)).GetAwaiter().GetResult();
                        console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"    killed silo {silos - 1} (pid {victim.ProcessId}) with {layer} of {settings.Layers} layers done (--kill-silo-after-layers)"));
                    }

                    return input;
                },
                _documents,
                cancellationToken: stop).ConfigureAwait(false);
            SequenceInfo placed = await client.GetSequenceAsync(id, stop).ConfigureAwait(false);
            await client.DeleteSequenceAsync(id, stop).ConfigureAwait(false);

            double errorO = 0;
            double errorLse = 0;
            foreach (LayerOutput output in outputs)
            {
                errorO = Math.Max(errorO, DemoCommand.Error(_expectedO, output.Output));
                errorLse = Math.Max(errorLse, DemoCommand.Error(_expectedLse, output.LogSumExp, floor: 1));
            }

            // Layer 0 of each point is its warm-up (the silos' first run of this layout: JIT, pools, connections);
            // the point's time is the median of the others, and its split that of the median layer.
            double[] layerMs = [.. outputs.Select(o => o.Run.Seconds * 1000)];
            LayerRunResult median = outputs.Skip(1).OrderBy(o => o.Run.Seconds).ElementAt((outputs.Count - 1) / 2).Run;
            ShardTimings slowest = median.Shards.MaxBy(s => s.ScatterSeconds + s.ComputeSeconds + s.WaitingSeconds + s.GatherSeconds)!;
            int threads = ThreadsPerSilo(silos);
            var point = new ScalingPoint(
                silos, layout.ToString(), settings.Tokens, settings.QueryHeads, settings.KeyValueHeads, settings.HeadDim, settings.DTypeName, settings.Mask.ToString(), threads,
                silos > _cores.Length, _network?.Link.BitsPerSecond, _network is null ? null : _network.LatencyApplied ? _network.Link.LatencyMicroseconds : 0,
                _cores.Length, _pinned ? CoresOfShards(placed, cluster, silos) : null);
            var measured = new Measured(point, layerMs, median.Seconds * 1000, slowest, _baselineMs[threads], _baselineMs[_cores.Length], errorO, errorLse, predict?.Invoke(point));
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    {layout}: layers {string.Join(", ", layerMs.Select(ms => ms.ToString("F1", CultureInfo.InvariantCulture)))} ms (layer 0 is the warm-up); O rel error {errorO:E2}, LSE rel error {errorLse:E2}: {(measured.Ok ? "OK" : "FAILED")}{Placement(point)}"));
            return measured;
        }

        /// <summary>
        /// The host cores each shard of <paramref name="placed"/> ran on (shard i's silo's pinned cores, as positions in
        /// this process's core list), from the shard map's endpoints; null where a shard's silo is not one of the cluster's.
        /// </summary>
        private int[][]? CoresOfShards(SequenceInfo placed, SiloProcessCluster cluster, int silos)
        {
            var cores = new int[placed.ShardMap.Count][];
            foreach (ShardInfo shard in placed.ShardMap)
            {
                int silo = Enumerable.Range(0, cluster.Silos.Count)
                    .FirstOrDefault(i => Uri.TryCreate(shard.Endpoint, UriKind.Absolute, out Uri? endpoint) && endpoint.Authority == cluster.Silos[i].HttpEndpoint?.Authority, -1);
                if (silo < 0 || shard.Index < 0 || shard.Index >= cores.Length)
                {
                    return null;
                }

                cores[shard.Index] = [.. CoresOf(silo, silos).Select(c => Array.IndexOf(_cores, c))];
            }

            return cores.Any(c => c is null) ? null : cores;
        }

        /// <summary>"; shard i on cpus …" for a pinned point: where the service put each shard, which the prediction uses.</summary>
        private string Placement(ScalingPoint point) => point.CoresOfShard is { } cores
            ? "; shards on cpus " + string.Join(" ", cores.Select((c, i) => $"{i}:{string.Join(",", c.Select(core => _cores[core]))}"))
            : "";

        private void Report(string? failure)
        {
            bool predicted = predict is not null;
            string[] columns =
            [
                ">silos", "layout", ">layer ms", ">compute ms", ">waiting ms", ">all-to-all ms", ">transfer ms", ">MB sent", ">baseline ms", ">efficiency", ">vs all cores",
                .. predicted ? [">predicted ms"] : Array.Empty<string>(), "check",
            ];
            Table table = CliConsole.Table(console, columns);
            foreach (Measured m in _measured)
            {
                ShardTimings s = m.Slowest;
                string[] row =
                [
                    m.Point.Silos.ToString(CultureInfo.InvariantCulture) + (m.Point.SharesCores ? "*" : ""), m.Point.Layout, Ms(m.MeasuredMs), Ms(s.ComputeSeconds * 1000), Ms(s.WaitingSeconds * 1000),
                    Ms((s.ScatterSeconds + s.GatherSeconds) * 1000), Ms(s.TransferSeconds * 1000), (s.BytesSent / 1e6).ToString("F1", CultureInfo.InvariantCulture), Ms(m.BaselineMs),
                    m.Efficiency.ToString("F3", CultureInfo.InvariantCulture), m.VersusAllCores.ToString("F3", CultureInfo.InvariantCulture),
                    .. predicted ? [m.PredictedMs is { } p ? Ms(p) : "n/a"] : Array.Empty<string>(), m.Ok ? "OK" : "FAILED",
                ];
                table.AddRow(row.Select(Markup.Escape).ToArray());
            }

            console.Write(table);
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  layer ms: the service's own layer time (LayerRunResult.Seconds), median of layers 1..{settings.Layers - 1} (layer 0 is each point's warm-up); compute, waiting, all-to-all (scatter + gather: the rows into the shard and out, with the Ulysses exchange where the layout has one), transfer (on the wire, overlapping compute) and MB sent: that layer's slowest shard (largest scatter + compute + waiting + gather)"));
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  baseline ms: the single-node kernel in this process with one silo's share of the cores (C/P threads of C = {_cores.Length}); efficiency = baseline / (P x layer ms), 1 when P silos with C/P cores each are P times as fast as one node with C/P cores; vs all cores = kernel on all {_cores.Length} cores / layer ms"));
            if (_measured.Any(m => m.Point.SharesCores))
            {
                console.WriteLine($"  *: more silos than cores ({_cores.Length}): silos share cores, so their kernels contend and efficiency falls for that reason alone");
            }

            var result = new Dictionary<string, object?>
            {
                ["tokens"] = settings.Tokens,
                ["layers"] = settings.Layers,
                ["hq"] = settings.QueryHeads,
                ["hkv"] = settings.KeyValueHeads,
                ["d"] = settings.HeadDim,
                ["dtype"] = settings.DTypeName,
                ["mask"] = settings.Mask.ToString(),
                ["cores"] = _cores.Length,
                ["pinned"] = _pinned,
                ["link"] = settings.Link?.Text ?? "loopback",
                ["link_applied"] = _linkApplied,
                ["points"] = _measured.Select(m => Point(m, predicted)).ToArray(),
                ["skipped"] = _skipped.Select(s => new Dictionary<string, object> { ["silos"] = s.Silos, ["layout"] = s.Layout, ["reason"] = s.Reason }).ToArray(),
                ["error"] = failure,
            };
            stdout.WriteLine(JsonSerializer.Serialize(result, Json));
        }

        private Dictionary<string, object?> Point(Measured m, bool predicted)
        {
            ShardTimings s = m.Slowest;
            var point = new Dictionary<string, object?>
            {
                ["silos"] = m.Point.Silos,
                ["layout"] = m.Point.Layout,
                ["tokens"] = m.Point.Tokens,
                ["link"] = settings.Link is null || _network is null ? "loopback" : settings.Link.Text,
                ["measured_ms"] = Round(m.MeasuredMs),
                ["compute_ms"] = Round(s.ComputeSeconds * 1000),
                ["waiting_ms"] = Round(s.WaitingSeconds * 1000),
                ["all_to_all_ms"] = Round((s.ScatterSeconds + s.GatherSeconds) * 1000),
                ["scatter_ms"] = Round(s.ScatterSeconds * 1000),
                ["gather_ms"] = Round(s.GatherSeconds * 1000),
                ["transfer_ms"] = Round(s.TransferSeconds * 1000),
                ["bytes_sent"] = s.BytesSent,
                ["layer_ms"] = m.LayerMs.Select(Round).ToArray(),
                ["threads_per_silo"] = m.Point.ThreadsPerSilo,
                ["shares_cores"] = m.Point.SharesCores,
                ["cores_of_shard"] = m.Point.CoresOfShard,
                ["baseline_ms"] = Round(m.BaselineMs),
                ["efficiency"] = Math.Round(m.Efficiency, 4),
                ["all_cores_ms"] = Round(m.AllCoresMs),
                ["vs_all_cores"] = Math.Round(m.VersusAllCores, 4),
                ["error_o"] = m.ErrorO,
                ["error_lse"] = m.ErrorLse,
                ["ok"] = m.Ok,
            };
            if (predicted)
            {
                point["predicted_ms"] = m.PredictedMs is { } p ? Round(p) : null;
            }

            return point;
        }

        private static double Round(double ms) => Math.Round(ms, 3);

        private static string FirstLine(string text) => text.Split('\n', 2)[0].TrimEnd();

        private static string Ms(double ms) => ms.ToString("F1", CultureInfo.InvariantCulture);

        /// <summary>Whether <c>taskset</c> can pin a process here (util-linux; absent on some minimal images).</summary>
        private bool CanPin()
        {
            try
            {
                using Process probe = Process.Start(new ProcessStartInfo("taskset", ["-c", _cores[0].ToString(CultureInfo.InvariantCulture), "true"]) { RedirectStandardError = true })!;
                probe.WaitForExit();
                return probe.ExitCode == 0;
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return false;
            }
        }

        /// <summary>The cores this process may run on (<c>Cpus_allowed_list</c>), or 0..ProcessorCount−1 where that cannot be read.</summary>
        private static int[] AllowedCores()
        {
            string? line = File.Exists("/proc/self/status") ? File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)) : null;
            if (line is not null)
            {
                var cores = new List<int>();
                foreach (string range in line["Cpus_allowed_list:".Length..].Trim().Split(',', StringSplitOptions.RemoveEmptyEntries))
                {
                    string[] ends = range.Split('-');
                    if (!int.TryParse(ends[0], CultureInfo.InvariantCulture, out int first) || !int.TryParse(ends[^1], CultureInfo.InvariantCulture, out int last))
                    {
                        cores.Clear();
                        break;
                    }

                    cores.AddRange(Enumerable.Range(first, last - first + 1));
                }

                if (cores.Count > 0)
                {
                    return [.. cores];
                }
            }

            return [.. Enumerable.Range(0, Environment.ProcessorCount)];
        }
    }
}
