using System.Runtime.InteropServices;
using LongCluster.Grains.Diagnostics;
using LongCluster.Kernels;
using LongCluster.Kernels.Planning;
using static System.FormattableString;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster plan --calibrate</c>: a <see cref="HardwareProfile"/> of this machine as a host of local clusters
/// (silos sharing its cores and its loopback), from two short measurements — the real forward kernel with the cores
/// split as a local cluster splits them (one single-threaded call per core, all at once), and Orleans grain calls
/// between two silos in this process as the ring sends its blocks (<c>bench transport --in-process</c>'s measurement,
/// smaller). Takes well under a minute.
/// </summary>
internal static class ProfileCalibration
{
    private const int QueryTokens = 2048;
    private const int KeyTokens = 4096;
    private const int Heads = 8;
    private const int HeadDim = 128;
    private const int WarmUpRounds = 3;
    private const int Rounds = 5;
    private const int Frames = 8;
    private const int FrameMib = 16;
    private const int Calls = 2000;

    public static HardwareProfile Measure(TextWriter log)
    {
        int cores = Environment.ProcessorCount;
        double gflops = KernelGflops(cores);
        log.WriteLine(Invariant($"calibrate: kernel {gflops:F1} GFLOP/s ({cores} single-threaded calls at once, f32, Tq={QueryTokens}, Tk={KeyTokens}, Hq=Hkv={Heads}, d={HeadDim}, full mask)"));
        TransferFigures transfer = BenchTransportCommand.InProcessAsync(Frames, FrameMib, Calls).GetAwaiter().GetResult();
        double oneWay = transfer.P50Microseconds / 2;
        log.WriteLine(Invariant($"calibrate: Orleans transfer {transfer.GigabytesPerSecond:F3} GB/s ({Frames} frames of {FrameMib} MiB), small calls p50 {transfer.P50Microseconds:F0} us"));
        string when = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", System.Globalization.CultureInfo.InvariantCulture);
        return new HardwareProfile
        {
            Name = "this-machine",
            Description = Invariant($"This host ({cores} cores, {RuntimeInformation.ProcessArchitecture}, {CpuModel()}) running a local cluster: its silos share the cores and the loopback."),
            KernelGflops = Math.Round(gflops, 1),
            KernelSource = Invariant(
                $"longcluster plan --calibrate, {when}: {cores} Attention.Forward calls at once, one thread each (a local cluster's silos split the cores), f32, Tq={QueryTokens}, Tk={KeyTokens}, Hq=Hkv={Heads}, d={HeadDim}, full mask; the median of {Rounds} rounds; 4·d FLOPs per pair and head. The whole host's rate (sharedHost)."),
            TransportGbitPerSecond = Math.Round(transfer.GigabytesPerSecond * 8, 3),
            TransportSource = Invariant(
                $"longcluster plan --calibrate, {when}: Orleans grain calls between two silos in one process over loopback TCP, {Frames} frames of {FrameMib} MiB one at a time ({transfer.GigabytesPerSecond:F3} GB/s), as the ring's exchange sends blocks: serializing, copying through the loopback and deserializing, all on this host's cores. The whole host's rate (sharedHost)."),
            LinkGbitPerSecond = Math.Round(transfer.GigabytesPerSecond * 8, 3),
            LinkSource = "The loopback: no wire of its own, its bytes are the cores' copies counted in transportGbitPerSecond, so the same rate (it never binds on its own). A shaped link (bench scaling --link) replaces it.",
            LinkLatencyMicroseconds = Math.Round(oneWay, 1),
            LatencySource = Invariant($"longcluster plan --calibrate, {when}: half the p50 round trip of {Calls} small grain calls between the two silos ({transfer.P50Microseconds:F0} us)."),
            Overlap = 1,
            SharedHost = true,
            HostCores = cores,
            LinkShared = true,
            OverheadSource = "Overheads are not measured by --calibrate (0 here). Overlap 1: the link's own time hides behind compute; what the cores spend moving a block (transportGbitPerSecond) does not, and is added to the step.",
        };
    }

    /// <summary>Aggregate GFLOP/s of <paramref name="cores"/> single-threaded forward calls run at once (the median round, after warm-up rounds).</summary>
    private static double KernelGflops(int cores)
    {
        var shape = new AttentionShape(QueryTokens, KeyTokens, Heads, Heads, HeadDim);
        var random = new Random(7);
        float[] q = [.. Enumerable.Range(0, (int)shape.QueryElements).Select(_ => (float)random.NextDouble() - 0.5f)];
        float[] k = [.. Enumerable.Range(0, (int)shape.KeyValueElements).Select(_ => (float)random.NextDouble() - 0.5f)];
        float[] v = [.. Enumerable.Range(0, (int)shape.KeyValueElements).Select(_ => (float)random.NextDouble() - 0.5f)];
        var options = new AttentionOptions { MaxThreads = 1 };
        var outputs = new float[cores][];
        var lses = new float[cores][];
        for (int c = 0; c < cores; c++)
        {
            outputs[c] = new float[shape.QueryElements];
            lses[c] = new float[shape.LseElements];
        }

        void Round() => Parallel.For(0, cores, new ParallelOptions { MaxDegreeOfParallelism = cores }, c =>
            Attention.Forward<float>(q, k, v, shape, AttentionMask.Full, default, outputs[c], lses[c], options));

        // Tiered compilation: the kernel's loops reach their optimized code only after a few calls (BenchTimer adds one more).
        for (int r = 1; r < WarmUpRounds; r++)
        {
            Round();
        }

        double[] seconds = BenchTimer.Measure(Rounds, Round);
        return cores * shape.Flops((long)QueryTokens * KeyTokens) / BenchTimer.Median(seconds) / 1e9;
    }

    private static string CpuModel()
    {
        try
        {
            string? line = File.Exists("/proc/cpuinfo") ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal)) : null;
            return line is null ? "CPU model unknown" : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (IOException)
        {
            return "CPU model unknown";
        }
    }
}
