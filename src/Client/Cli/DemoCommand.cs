using System.Diagnostics;
using System.Globalization;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Service;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster demo</c>, the README's main job: a local cluster of N silos in this process on the embedded default,
/// a sequence of realistic shape prefilled through the SDK (rows uploaded straight to the silos that host their
/// shards) with progress, decode steps, every layer's output checked against the single-node kernel, timings printed.
/// Exit 0 when every check passes, 1 when one does not.
/// </summary>
internal static class DemoCommand
{
    /// <summary>Relative error allowed against the single-node kernel (<see cref="Error"/>; LSE with a floor of 1), by demo, bench load and bench scaling alike.</summary>
    internal const double Tolerance = 1e-4;

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("demo", args, ["silos", "tokens", "layers", "hq", "hkv", "d", "mask", "layout", "shards", "dtype", "decode", "seed"], []);
        int silos = options.Int("silos", 4, 1, 64);
        int tokens = options.Int("tokens", 32768, 1);
        int layers = options.Int("layers", 4, 1, SequenceSpec.MaxLayers);
        (int hq, int hkv) = options.Heads(8, 2);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int decode = options.Int("decode", 16, 0);
        int seed = options.Int("seed", 1, 0);
        int shards = options.Int("shards", 0, 0, 1024);
        DType dtype = options.FloatType("dtype", "f32");
        AttentionMask mask = options.Mask("causal");
        string layout = options.LayoutOrAuto("zigzag");
        if (decode > 0 && mask.Kind == MaskKind.Full)
        {
            throw new UsageException("demo: decode needs a mask under which earlier tokens cannot see later ones (not full); use --decode 0 with --mask full");
        }

        var spec = new SequenceSpec
        {
            Layers = layers, QueryHeads = hq, KeyValueHeads = hkv, HeadDim = d, DType = dtype.SafetensorsName().ToLowerInvariant(), Layout = layout, Mask = mask.ToString(), Shards = shards,
            // The demo prefills in one chunk: auto plans for exactly that.
            AutoChunkTokens = layout == "auto" ? Math.Min(tokens, SequenceSpec.MaxAutoChunkTokens) : 0,
        };
        using var stop = new StopSignal();
        try
        {
            return RunAsync(spec, silos, tokens, decode, seed, stdout, stop.Token).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (stop.Token.IsCancellationRequested)
        {
            stdout.WriteLine();
            stdout.WriteLine("demo: stopped by a signal; every silo left the cluster");
            return CliApp.ExitFailed;
        }
    }

    private static async Task<int> RunAsync(SequenceSpec spec, int silos, int tokens, int decode, int seed, TextWriter stdout, CancellationToken stop)
    {
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"demo: {silos} silos in this process (Orleans development clustering); sequence of {tokens} tokens, {spec.Layers} layers, {spec.QueryHeads}:{spec.KeyValueHeads} GQA, d = {spec.HeadDim}, {spec.DType}, {spec.Mask}, {spec.Layout}; {decode} decode steps"));
        long started = Stopwatch.GetTimestamp();
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(silos, cancellationToken: stop).ConfigureAwait(false);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  cluster up in {Stopwatch.GetElapsedTime(started).TotalSeconds:F2} s: {string.Join(", ", cluster.Endpoints)}"));
        IAnsiConsole console = CliConsole.For(stdout);
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = cluster.Endpoints,
            Token = cluster.ApiToken,
            // Through the console, which keeps a live progress bar below what it writes.
            OnRetry = r => console.WriteLine($"retry {r.Attempt} of {r.What} in {r.Delay.TotalSeconds:0.0} s: {r.Failure.Message}"),
        });
        int total = tokens + decode;
        DType dtype = DTypes.TryParseFloat(spec.DType, out DType parsed) ? parsed : DType.F32;
        // Seconds of work per layer at the larger sizes: a signal stops it between layers rather than after all of them.
        var data = Enumerable.Range(0, spec.Layers).Select(l =>
        {
            stop.ThrowIfCancellationRequested();
            return (
                Q: TensorChecks.Synthetic(dtype, seed + (10 * l), total, spec.QueryHeads, spec.HeadDim),
                K: TensorChecks.Synthetic(dtype, seed + (10 * l) + 1, total, spec.KeyValueHeads, spec.HeadDim),
                V: TensorChecks.Synthetic(dtype, seed + (10 * l) + 2, total, spec.KeyValueHeads, spec.HeadDim));
        }).ToArray();
        // The model's input to each layer, ready before the clock starts: the prefill figure is the cluster's work.
        LayerInput[] inputs = [.. data.Select(x => new LayerInput(Rows(x.Q, 0, tokens), Rows(x.K, 0, tokens), Rows(x.V, 0, tokens)))];
        AttentionMask mask = AttentionMask.Parse(spec.Mask);
        int[]? documents = mask.Document ? [.. Enumerable.Range(0, total).Select(t => t / 1024)] : null;

        var layerWatch = new Stopwatch();
        var layerSeconds = new List<double>();
        started = Stopwatch.GetTimestamp();
        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await PrefillProgressView.ShowAsync(console, CliConsole.IsInteractive(stdout), spec.Layers, progress => client.CreateAndPrefillAsync(
            spec,
            "demo",
            tokens,
            (l, _) =>
            {
                if (l > 0)
                {
                    layerSeconds.Add(layerWatch.Elapsed.TotalSeconds);
                }

                layerWatch.Restart();
                return inputs[l];
            },
            documents?[..tokens],
            progress,
            stop)).ConfigureAwait(false);
        layerSeconds.Add(layerWatch.Elapsed.TotalSeconds);
        double prefillSeconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  prefill: {tokens} tokens x {spec.Layers} layers on {info.Shards} shards in {prefillSeconds:F2} s: {(double)tokens * spec.Layers / prefillSeconds:F0} token-layers/s"));
        if (info.LayoutChosen is { } chosen)
        {
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  layout auto: the coordinator chose {chosen} (predicted {info.PredictedLayerMs:F1} ms per layer for chunks of {info.Spec.AutoChunkTokens} tokens)"));
        }

        bool ok = true;
        double kernelSeconds = 0;
        long[] positions = [.. Enumerable.Range(0, total).Select(i => (long)i)];
        for (int l = 0; l < spec.Layers; l++)
        {
            stop.ThrowIfCancellationRequested();
            LayerRunResult run = outputs[l].Run;
            var shape = new AttentionShape(tokens, tokens, spec.QueryHeads, spec.KeyValueHeads, spec.HeadDim);
            var o = new float[shape.QueryElements];
            var lse = new float[shape.LseElements];
            long kernelStarted = Stopwatch.GetTimestamp();
            TensorChecks.Forward(
                CpuBackend.Instance, inputs[l].Query, inputs[l].Key, inputs[l].Value, shape, mask,
                new AttentionTokens(positions.AsSpan(0, tokens), positions.AsSpan(0, tokens), documents.AsSpan(0, documents is null ? 0 : tokens), documents.AsSpan(0, documents is null ? 0 : tokens)),
                o, lse, AttentionOptions.Default);
            double kernel = Stopwatch.GetElapsedTime(kernelStarted).TotalSeconds;
            kernelSeconds += kernel;
            (double errorO, double errorL) = (Error(o, outputs[l].Output), Error(lse, outputs[l].LogSumExp, floor: 1));
            bool layerOk = errorO <= Tolerance && errorL <= Tolerance;
            ok &= layerOk;
            ShardTimings slowest = run.Shards.MaxBy(s => s.ComputeSeconds + s.WaitingSeconds)!;
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  layer {l}: {layerSeconds[l]:F2} s end to end ({tokens / layerSeconds[l]:F0} tokens/s), layer run {run.Seconds:F2} s; slowest shard {slowest.Index}: compute {slowest.ComputeSeconds:F2} s, waiting {slowest.WaitingSeconds:F3} s, all-to-all {slowest.ScatterSeconds + slowest.GatherSeconds:F3} s, transfer {slowest.TransferSeconds:F3} s (overlapped, {slowest.BytesSent / 1e6:F0} MB sent)"));
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"           single-node kernel {kernel:F2} s ({tokens / kernel:F0} tokens/s); O rel error {errorO:E2}, LSE rel error {errorL:E2}: {(layerOk ? "OK" : "FAILED")}"));
        }

        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  single-node kernel, all {Environment.ProcessorCount} cores: {(double)tokens * spec.Layers / kernelSeconds:F0} token-layers/s; cluster / kernel throughput = {kernelSeconds / prefillSeconds:F3}"));

        if (decode > 0)
        {
            var decodeShape = new AttentionShape(decode, total, spec.QueryHeads, spec.KeyValueHeads, spec.HeadDim);
            double worst = 0;
            double decodeSeconds = 0;
            var expected = new (float[] O, float[] Lse)[spec.Layers];
            for (int l = 0; l < spec.Layers; l++)
            {
                expected[l] = (new float[decodeShape.QueryElements], new float[decodeShape.LseElements]);
                TensorChecks.Forward(
                    CpuBackend.Instance, Rows(data[l].Q, tokens, decode), data[l].K, data[l].V, decodeShape, mask,
                    new AttentionTokens(positions.AsSpan(tokens), positions, documents.AsSpan(documents is null ? 0 : tokens), documents), expected[l].O, expected[l].Lse, AttentionOptions.Default);
            }

            int rowO = spec.QueryHeads * spec.HeadDim;
            for (int t = 0; t < decode; t++)
            {
                for (int l = 0; l < spec.Layers; l++)
                {
                    long decodeStarted = Stopwatch.GetTimestamp();
                    DecodeOutput result = await client.DecodeAsync(
                        "demo", l, Rows(data[l].Q, tokens + t, 1), Rows(data[l].K, tokens + t, 1), Rows(data[l].V, tokens + t, 1), documents?[tokens + t], stop).ConfigureAwait(false);
                    decodeSeconds += Stopwatch.GetElapsedTime(decodeStarted).TotalSeconds;
                    worst = Math.Max(worst, Math.Max(
                        Error(expected[l].O.AsSpan(t * rowO, rowO), result.Output),
                        Error(expected[l].Lse.AsSpan(t * spec.QueryHeads, spec.QueryHeads), result.LogSumExp, floor: 1)));
                }
            }

            bool decodeOk = worst <= Tolerance;
            ok &= decodeOk;
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  decode: {decode} tokens x {spec.Layers} layers, {decodeSeconds / (decode * spec.Layers) * 1000:F1} ms per token-layer (query to every shard, partials merged by tree); max rel error {worst:E2}: {(decodeOk ? "OK" : "FAILED")}"));
        }

        SequenceInfo final = await client.GetSequenceAsync("demo", stop).ConfigureAwait(false);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"  sequence '{final.Id}': {final.State}, {final.Length} tokens, {final.ShardMap.Sum(s => s.ResidentBytes) / 1e6:F0} MB resident over {final.Shards} shards"));
        await client.DeleteSequenceAsync("demo").ConfigureAwait(false);
        stdout.WriteLine(ok ? "demo: OK" : "demo: FAILED (an output differs from the single-node kernel beyond the tolerance)");
        return ok ? CliApp.ExitOk : CliApp.ExitFailed;
    }

    /// <summary>
    /// Normwise relative error: max |actual − expected| / max(<paramref name="floor"/>, max |expected|) (−∞ must match
    /// exactly). LSE is checked with a floor of 1: it is a logarithm, whose absolute error is the relative error of
    /// the softmax's normalizer, and a row whose LSE happens to lie near 0 (one visible key with a score near 0,
    /// say) would otherwise turn float rounding in the score (1e-7) into a relative error past any tolerance.
    /// </summary>
    internal static double Error(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double floor = 0)
    {
        double error = 0;
        double scale = floor;
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNegativeInfinity(expected[i]) || float.IsNegativeInfinity(actual[i]))
            {
                error = expected[i] == actual[i] ? error : double.PositiveInfinity;
                continue;
            }

            error = Math.Max(error, Math.Abs(actual[i] - expected[i]));
            scale = Math.Max(scale, Math.Abs(expected[i]));
        }

        return scale == 0 ? error : error / scale;
    }

    /// <summary>Rows [start, start+count) of a [T, H, d] tensor: a copy, or the tensor itself when that is all of it.</summary>
    internal static HostTensor Rows(HostTensor tensor, int start, int count)
    {
        if (start == 0 && count == tensor.Shape[0])
        {
            return tensor;
        }

        int row = (int)(tensor.Shape[1] * tensor.Shape[2]) * tensor.DType.Size();
        return new HostTensor(tensor.DType, [count, tensor.Shape[1], tensor.Shape[2]], tensor.Data.Span.Slice(start * row, count * row).ToArray());
    }
}
