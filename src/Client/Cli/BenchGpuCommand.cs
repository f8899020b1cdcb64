using System.Text.Json;
using static System.FormattableString;
using LongCluster.Kernels;
using LongCluster.Kernels.Gpu;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench gpu</c>: the ILGPU kernels on a CUDA device with their yardsticks from the same run — forward
/// GFLOP/s (live pairs, <c>4 · d · Hq</c> per pair) beside cuBLAS SGEMM, decode GB/s (K and V bytes read) beside a
/// device-to-device copy (bytes read + written) of as many bytes. Data stays on the device; only kernels are timed.
/// Without a CUDA device it says so and exits 3; <c>--device cpu</c> runs the same code on ILGPU's CPU accelerator
/// (small shapes, no SGEMM yardstick: for checking the command, not for figures). The last line is JSON.
/// </summary>
internal static class BenchGpuCommand
{
    /// <summary>Exit code when no CUDA device is found: the benchmark had nothing to run on.</summary>
    public const int ExitNoDevice = 3;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        CommandLine options = CommandLine.Parse(
            "bench gpu", args, ["tokens", "hq", "hkv", "d", "dtypes", "masks", "decode-tk", "sgemm", "repeat", "device"], ["probe"]);
        int[] tokens = options.Has("tokens") ? options.IntList("tokens", 1, 1 << 20) : [8192, 32768];
        (int hq, int hkv) = options.Heads(32, 8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int decodeTokens = options.Int("decode-tk", 262144, 1);
        int sgemm = options.Int("sgemm", 8192, 1, 32768);
        int repeat = options.Int("repeat", 5, 1);
        DType[] dtypes = [.. (options.Text("dtypes") ?? "f32,bf16").Split(',', StringSplitOptions.TrimEntries).Select(t => t switch
        {
            "f32" => DType.F32,
            "bf16" => DType.BF16,
            _ => throw new UsageException($"bench gpu: --dtypes lists f32 and/or bf16, got '{t}'"),
        })];
        AttentionMask[] masks = [.. (options.Text("masks") ?? "full,causal").Split(',', StringSplitOptions.TrimEntries).Select(m => m switch
        {
            "full" => AttentionMask.Full,
            "causal" => AttentionMask.Causal,
            _ => throw new UsageException($"bench gpu: --masks lists full and/or causal, got '{m}'"),
        })];
        IlgpuDevice device = (options.Text("device") ?? "cuda") switch
        {
            "cuda" => IlgpuDevice.Cuda,
            "cpu" => IlgpuDevice.Cpu,
            string other => throw new UsageException($"bench gpu: --device must be cuda or cpu, got '{other}'"),
        };

        if (device == IlgpuDevice.Cuda && IlgpuBackend.CudaDeviceCount() == 0)
        {
            stderr.WriteLine("bench gpu: no CUDA device found (ILGPU sees no NVIDIA GPU or no CUDA driver on this machine); nothing to measure");
            return ExitNoDevice;
        }

        using var backend = new IlgpuBackend(device);
        stdout.WriteLine($"device: {backend.DeviceName} ({backend.Name})");
        if (options.Has("probe"))
        {
            return CliApp.ExitOk;
        }

        IAnsiConsole console = CliConsole.For(stdout);
        double? sgemmGflops = backend.IsCuda ? GpuBenchmarks.SgemmGflops(backend, sgemm, sgemm, sgemm, repeat) : null;
        string yardstick = sgemmGflops is null ? "none (not CUDA)" : Invariant($"cuBLAS SGEMM {sgemm}^3: {sgemmGflops:F0} GFLOP/s");
        stdout.WriteLine($"yardstick: {yardstick}");

        var forward = new List<Dictionary<string, object?>>();
        Table forwardTable = CliConsole.Table(console, "dtype", ">T", "mask", ">Hq/Hkv/d", ">ms", ">GFLOP/s", ">/ SGEMM");
        foreach (DType dtype in dtypes)
        {
            foreach (int t in tokens)
            {
                foreach (AttentionMask mask in masks)
                {
                    GpuBenchmarks.ForwardTiming timing = GpuBenchmarks.Forward(backend, dtype, hq, hkv, d, t, mask, repeat);
                    double? ratio = sgemmGflops is null ? null : timing.GflopsPerSecond / sgemmGflops;
                    string name = dtype.SafetensorsName().ToLowerInvariant();
                    forwardTable.AddRow(
                        name, Invariant($"{t}"), mask.ToString(), $"{hq}/{hkv}/{d}", Invariant($"{timing.Seconds * 1000:F2}"), Invariant($"{timing.GflopsPerSecond:F0}"),
                        ratio is null ? "-" : Invariant($"{ratio:F3}"));
                    forward.Add(new()
                    {
                        ["dtype"] = name, ["tokens"] = t, ["mask"] = mask.ToString(), ["ms"] = Math.Round(timing.Seconds * 1000, 3),
                        ["gflops"] = Math.Round(timing.GflopsPerSecond, 1), ["ratio_to_sgemm"] = ratio is null ? null : Math.Round(ratio.Value, 4),
                    });
                }
            }
        }

        console.Write(forwardTable);
        var decode = new List<Dictionary<string, object?>>();
        Table decodeTable = CliConsole.Table(console, "dtype", ">Tk", ">Hq/Hkv/d", ">ms", ">K+V GB/s", ">copy GB/s", ">/ copy");
        foreach (DType dtype in dtypes)
        {
            GpuBenchmarks.BandwidthTiming timing = GpuBenchmarks.Decode(backend, dtype, decodeTokens, hq, hkv, d, repeat);
            GpuBenchmarks.BandwidthTiming copy = GpuBenchmarks.Copy(backend, timing.Bytes, repeat);
            double ratio = timing.GigabytesPerSecond / copy.GigabytesPerSecond;
            string name = dtype.SafetensorsName().ToLowerInvariant();
            decodeTable.AddRow(
                name, Invariant($"{decodeTokens}"), $"{hq}/{hkv}/{d}", Invariant($"{timing.Seconds * 1000:F3}"), Invariant($"{timing.GigabytesPerSecond:F1}"),
                Invariant($"{copy.GigabytesPerSecond:F1}"), Invariant($"{ratio:F3}"));
            decode.Add(new()
            {
                ["dtype"] = name, ["tk"] = decodeTokens, ["ms"] = Math.Round(timing.Seconds * 1000, 4), ["gbps"] = Math.Round(timing.GigabytesPerSecond, 2),
                ["copy_gbps"] = Math.Round(copy.GigabytesPerSecond, 2), ["ratio_to_copy"] = Math.Round(ratio, 4),
            });
        }

        console.Write(decodeTable);
        stdout.WriteLine("copy GB/s counts bytes read + written; decode GB/s counts K and V bytes read");
        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["device"] = backend.DeviceName,
            ["backend"] = backend.Name,
            ["hq"] = hq,
            ["hkv"] = hkv,
            ["d"] = d,
            ["sgemm_gflops"] = sgemmGflops is null ? null : Math.Round(sgemmGflops.Value, 1),
            ["forward"] = forward,
            ["decode"] = decode,
        }));
        return CliApp.ExitOk;
    }
}
