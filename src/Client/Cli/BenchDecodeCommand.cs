using System.Globalization;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
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
        CommandLine options = CommandLine.Parse("bench decode", args, ["tk", "hq", "hkv", "d", "mask", "dtype", "threads", "repeat", "doc-len", "backend", "sgemv"], []);
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
        void RunDecode() => TensorChecks.Decode(backend, q, k, v, shape, mask, new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments), o, lse, kernelOptions);
        using OpenBlasGemv? gemv = options.Text("sgemv") is string library ? OpenBlasGemv.Load(library, bytes, threads) : null;
        double[] times;
        double[] gemvTimes = [];
        if (gemv is null)
        {
            times = BenchTimer.Measure(repeat, RunDecode).Select(s => s * 1000).ToArray();
        }
        else
        {
            (double[] first, double[] second) = BenchTimer.MeasureAlternating(repeat, RunDecode, gemv.Run);
            times = first.Select(s => s * 1000).ToArray();
            gemvTimes = second.Select(s => s * 1000).ToArray();
        }

        double median = BenchTimer.Median(times);
        double gbps = bytes / (median / 1000) / 1e9;
        double gemvMs = gemv is null ? 0 : BenchTimer.Median(gemvTimes);
        double gemvGbps = gemv is null ? 0 : gemv.Bytes / (gemvMs / 1000) / 1e9;
        double readMs = BenchTimer.Median(BenchTimer.Measure(repeat, () => StreamRead([k.Data, v.Data], threads))) * 1000;
        double readGbps = bytes / (readMs / 1000) / 1e9;
        long? hugePageBytes = HugePageBytes();
        string shapeText = $"Tq=1 Tk={tk} Hq={hq} Hkv={hkv} d={d}";
        IAnsiConsole console = CliConsole.For(stdout);
        console.Write(CliConsole.Table(console, "backend", "shape", "mask", "dtype", ">thr", ">K+V MiB", ">median ms", ">min ms", ">GB/s", ">read GB/s").AddRow(
            backend.Name, shapeText, mask.ToString(), dtypeText, Invariant($"{threads}"), Invariant($"{bytes / 1048576.0:F1}"), Invariant($"{median:F3}"), Invariant($"{times[0]:F3}"), Invariant($"{gbps:F2}"),
            Invariant($"{readGbps:F2}")));
        console.WriteLine(Invariant($"read GB/s: the same K and V arrays streamed by {threads} thread(s) with no arithmetic, median of {repeat}: what these pages give a plain read; the kernel reaches {gbps / readGbps:F2} of it"));
        if (gemv is not null)
        {
            console.WriteLine(Invariant(
                $"OpenBLAS SGEMV ({gemv.Core}, {gemv.Threads} thread(s)) over [{gemv.Rows}, {OpenBlasGemv.Columns}] f32, {gemv.Bytes / 1048576.0:F0} MiB, calls alternating with decode: {gemvMs:F3} ms, {gemvGbps:F2} GB/s; decode reaches {gbps / gemvGbps:F3} of it"));
        }

        if (hugePageBytes is long huge)
        {
            console.WriteLine(Invariant($"on huge pages: {huge / 1048576.0:F0} MiB of this process's memory, where K and V are {bytes / 1048576.0:F0} MiB (HugePages asks for them; the kernel gives what it has)"));
        }

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
            ["read_gbps"] = Math.Round(readGbps, 3),
            ["read_ms"] = Math.Round(readMs, 3),
            ["live_keys"] = liveKeys,
            ["huge_page_mib"] = hugePageBytes is long h ? Math.Round(h / 1048576.0) : null!,
            ["repeat"] = repeat,
            ["vector_bits"] = BenchKernelCommand.VectorBits,
            ["backend"] = backend.Name,
        };
        if (gemv is not null)
        {
            summary["sgemv_gbps"] = Math.Round(gemvGbps, 3);
            summary["sgemv_ms"] = Math.Round(gemvMs, 3);
            summary["sgemv_min_ms"] = Math.Round(gemvTimes[0], 3);
            summary["sgemv_bytes"] = gemv.Bytes;
            summary["sgemv_core"] = gemv.Core;
            summary["sgemv_ratio"] = Math.Round(gbps / gemvGbps, 4);
        }

        stdout.WriteLine(JsonSerializer.Serialize(summary));
        return CliApp.ExitOk;
    }

    /// <summary>The process's anonymous memory on transparent huge pages (Linux's <c>smaps_rollup</c>); null elsewhere.</summary>
    private static long? HugePageBytes()
    {
        const string rollup = "/proc/self/smaps_rollup";
        if (!File.Exists(rollup))
        {
            return null;
        }

        string? line = File.ReadLines(rollup).FirstOrDefault(l => l.StartsWith("AnonHugePages:", StringComparison.Ordinal));
        return line is null ? null : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
    }

    /// <summary>
    /// Reads every byte of <paramref name="arrays"/> once, each split into <paramref name="threads"/> contiguous parts
    /// read at once, as 32-byte vectors summed into four accumulators (so the loads, not the adds, set the pace).
    /// </summary>
    private static void StreamRead(Memory<byte>[] arrays, int threads)
    {
        float total = 0;
        foreach (Memory<byte> array in arrays)
        {
            long vectors = array.Length / 128 * 4;
            var sums = new float[threads];
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                ReadOnlySpan<Vector256<float>> all = MemoryMarshal.Cast<byte, Vector256<float>>(array.Span[..(int)(vectors * 32)]);
                ReadOnlySpan<Vector256<float>> part = all[(int)(vectors * t / threads / 4 * 4)..(int)(vectors * (t + 1) / threads / 4 * 4)];
                Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
                for (int i = 0; i < part.Length; i += 4)
                {
                    s0 += part[i];
                    s1 += part[i + 1];
                    s2 += part[i + 2];
                    s3 += part[i + 3];
                }

                sums[t] = Vector256.Sum((s0 + s1) + (s2 + s3));
            });
            total += sums.Sum();
        }

        GC.KeepAlive(total);
    }
}
