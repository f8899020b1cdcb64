using System.Text.Json;
using static System.FormattableString;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench decode</c>: times the decode kernel for one query row (position Tk − 1) against Tk keys on
/// synthetic data. Decode is bound by reading K and V, so the figure is GB/s of K and V:
/// <c>2 · Tk · Hkv · d · sizeof(dtype)</c> bytes over the median time. Under a mask that hides keys those keys are
/// still counted (the figure is then an effective rate). The last line is one JSON object for scripts.
/// </summary>
internal static class BenchDecodeCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench decode", args, ["tk", "hq", "hkv", "d", "mask", "dtype", "threads", "repeat", "doc-len", "backend"], []);
        int tk = options.Int("tk", 262144, 1);
        (int hq, int hkv) = options.Heads(32, 8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int threads = options.Int("threads", Environment.ProcessorCount, 1);
        int repeat = options.Int("repeat", 5, 1);
        int documentLength = options.Int("doc-len", 1024, 1);
        DType dtype = options.FloatType("dtype", "bf16");
        string dtypeText = dtype.SafetensorsName().ToLowerInvariant();
        AttentionMask mask = options.Mask("full");

        IAttentionBackend backend = options.Backend();
        var shape = new AttentionShape(1, tk, hq, hkv, d);
        HostTensor q = TensorChecks.Synthetic(dtype, 1, 1, hq, d);
        HostTensor k = TensorChecks.Synthetic(dtype, 2, tk, hkv, d);
        HostTensor v = TensorChecks.Synthetic(dtype, 3, tk, hkv, d);
        long bytes = 2L * tk * hkv * d * dtype.Size();

        // The query is the newest token: it sits after every key, as in generation.
        long[] kPositions = Enumerable.Range(0, tk).Select(i => (long)i).ToArray();
        long[] qPositions = [tk - 1];
        int[] kDocuments = mask.Document ? kPositions.Select(p => (int)(p / documentLength)).ToArray() : [];
        int[] qDocuments = mask.Document ? qPositions.Select(p => (int)(p / documentLength)).ToArray() : [];
        long liveKeys = mask.CountLivePairs(qPositions, kPositions, qDocuments, kDocuments);

        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        var kernelOptions = new AttentionOptions { MaxThreads = threads };
        double[] times = BenchTimer.Measure(
            repeat, () => TensorChecks.Decode(backend, q, k, v, shape, mask, new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments), o, lse, kernelOptions))
            .Select(s => s * 1000).ToArray();
        double median = BenchTimer.Median(times);
        double gbps = bytes / (median / 1000) / 1e9;
        string shapeText = $"Tq=1 Tk={tk} Hq={hq} Hkv={hkv} d={d}";
        IAnsiConsole console = CliConsole.For(stdout);
        console.Write(CliConsole.Table(console, "backend", "shape", "mask", "dtype", ">thr", ">K+V MiB", ">median ms", ">min ms", ">GB/s").AddRow(
            backend.Name, shapeText, mask.ToString(), dtypeText, Invariant($"{threads}"), Invariant($"{bytes / 1048576.0:F1}"), Invariant($"{median:F3}"), Invariant($"{times[0]:F3}"), Invariant($"{gbps:F2}")));
        var summary = new Dictionary<string, object>
        {
            ["gbps"] = Math.Round(gbps, 3),
            ["ms"] = Math.Round(median, 3),
            ["min_ms"] = Math.Round(times[0], 3),
            ["tk"] = tk,
            ["hq"] = hq,
            ["hkv"] = hkv,
            ["d"] = d,
            ["mask"] = mask.ToString(),
            ["dtype"] = dtypeText,
            ["threads"] = threads,
            ["bytes"] = bytes,
            ["live_keys"] = liveKeys,
            ["repeat"] = repeat,
            ["vector_bits"] = BenchKernelCommand.VectorBits,
            ["backend"] = backend.Name,
        };
        stdout.WriteLine(JsonSerializer.Serialize(summary));
        return CliApp.ExitOk;
    }
}
