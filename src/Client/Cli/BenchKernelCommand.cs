using System.Runtime.Intrinsics;
using System.Text.Json;
using static System.FormattableString;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench kernel</c>: times the forward kernel on synthetic data. GFLOP/s count live pairs only
/// (<c>4 · d · Hq · live pairs</c>). With <c>--against MASK</c> it times a second mask on the same tensors in
/// alternating calls and reports the ratio of their median times (<c>time_ratio</c>), which two separate runs on a
/// shared machine measure in different stretches of its load. The last line is one JSON object for scripts.
/// </summary>
internal static class BenchKernelCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench kernel", args, ["tq", "tk", "hq", "hkv", "d", "mask", "dtype", "threads", "repeat", "doc-len", "backend", "against"], []);
        int tq = options.Int("tq", 4096, 1);
        int tk = options.Int("tk", tq, 1);
        (int hq, int hkv) = options.Heads(8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int threads = options.Int("threads", Environment.ProcessorCount, 1);
        int repeat = options.Int("repeat", 5, 1);
        int documentLength = options.Int("doc-len", 1024, 1);
        DType dtype = options.FloatType("dtype", "f32");
        string dtypeText = dtype.SafetensorsName().ToLowerInvariant();
        AttentionMask mask = options.Mask("full");

        bool compare = options.Has("against");
        AttentionMask against = options.Mask("full", "against");

        IAttentionBackend backend = options.Backend();
        var shape = new AttentionShape(tq, tk, hq, hkv, d);
        HostTensor q = TensorChecks.Synthetic(dtype, 1, tq, hq, d);
        HostTensor k = TensorChecks.Synthetic(dtype, 2, tk, hkv, d);
        HostTensor v = TensorChecks.Synthetic(dtype, 3, tk, hkv, d);
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        var kernelOptions = new AttentionOptions { MaxThreads = threads };

        // Queries are the last tq positions of the tk keys, as in a prefill chunk.
        long[] kPositions = Enumerable.Range(0, tk).Select(i => (long)i).ToArray();
        long[] qPositions = Enumerable.Range(Math.Max(0, tk - tq), tq).Select(i => (long)i).ToArray();
        (Action run, long livePairs) Case(AttentionMask caseMask)
        {
            int[] kDocuments = caseMask.Document ? kPositions.Select(p => (int)(p / documentLength)).ToArray() : [];
            int[] qDocuments = caseMask.Document ? qPositions.Select(p => (int)(p / documentLength)).ToArray() : [];
            return (
                () => TensorChecks.Forward(backend, q, k, v, shape, caseMask, new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments), o, lse, kernelOptions),
                caseMask.CountLivePairs(qPositions, kPositions, qDocuments, kDocuments));
        }

        (Action run, long livePairs) = Case(mask);
        double flops = shape.Flops(livePairs);
        double[] times;
        double[] againstTimes = [];
        long againstPairs = 0;
        if (compare)
        {
            (Action againstRun, againstPairs) = Case(against);
            (double[] first, double[] second) = BenchTimer.MeasureAlternating(repeat, run, againstRun);
            times = first.Select(s => s * 1000).ToArray();
            againstTimes = second.Select(s => s * 1000).ToArray();
        }
        else
        {
            times = BenchTimer.Measure(repeat, run).Select(s => s * 1000).ToArray();
        }

        double median = BenchTimer.Median(times);
        double gflops = flops / (median / 1000) / 1e9;
        string shapeText = $"Tq={tq} Tk={tk} Hq={hq} Hkv={hkv} d={d}";
        IAnsiConsole console = CliConsole.For(stdout);
        Table table = CliConsole.Table(console, "backend", "shape", "mask", "dtype", ">thr", ">live pairs", ">median ms", ">min ms", ">GFLOP/s").AddRow(
            backend.Name, shapeText, mask.ToString(), dtypeText, Invariant($"{threads}"), Invariant($"{livePairs}"), Invariant($"{median:F2}"), Invariant($"{times[0]:F2}"), Invariant($"{gflops:F1}"));
        double againstMedian = compare ? BenchTimer.Median(againstTimes) : 0;
        double againstGflops = compare ? shape.Flops(againstPairs) / (againstMedian / 1000) / 1e9 : 0;
        if (compare)
        {
            table.AddRow(
                backend.Name, shapeText, against.ToString(), dtypeText, Invariant($"{threads}"), Invariant($"{againstPairs}"),
                Invariant($"{againstMedian:F2}"), Invariant($"{againstTimes[0]:F2}"), Invariant($"{againstGflops:F1}"));
        }

        console.Write(table);
        var summary = new Dictionary<string, object>
        {
            ["gflops"] = Math.Round(gflops, 2),
            ["ms"] = Math.Round(median, 3),
            ["min_ms"] = Math.Round(times[0], 3),
            ["tq"] = tq,
            ["tk"] = tk,
            ["hq"] = hq,
            ["hkv"] = hkv,
            ["d"] = d,
            ["mask"] = mask.ToString(),
            ["dtype"] = dtypeText,
            ["threads"] = threads,
            ["live_pairs"] = livePairs,
            ["repeat"] = repeat,
            ["vector_bits"] = VectorBits,
            ["backend"] = backend.Name,
        };
        if (compare)
        {
            summary["against"] = against.ToString();
            summary["against_ms"] = Math.Round(againstMedian, 3);
            summary["against_min_ms"] = Math.Round(againstTimes[0], 3);
            summary["against_gflops"] = Math.Round(againstGflops, 2);
            summary["against_live_pairs"] = againstPairs;
            summary["time_ratio"] = Math.Round(median / againstMedian, 4);
            stdout.WriteLine(Invariant($"{mask} / {against} time, calls alternating: {median / againstMedian:F3}"));
        }

        stdout.WriteLine(JsonSerializer.Serialize(summary));
        return CliApp.ExitOk;
    }

    /// <summary>
    /// The widest vector the JIT accelerates in this process (512, 256, 128, or 0 for scalar), so a report can show
    /// that a run under <c>DOTNET_EnableAVX512=0</c> or similar took the path it meant to measure.
    /// </summary>
    public static int VectorBits =>
        Vector512.IsHardwareAccelerated ? 512
        : Vector256.IsHardwareAccelerated ? 256
        : Vector128.IsHardwareAccelerated ? 128
        : 0;
}
