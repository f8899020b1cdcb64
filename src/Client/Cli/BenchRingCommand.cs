using System.Globalization;
using System.Text.Json;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Tensors;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench ring</c>: the in-process context-parallel driver (P ranks, one kernel thread each) against
/// the single-node kernel on one thread, same shape and mask. Parallel efficiency = single / (P · parallel).
/// Also checks that both give the same numbers.
/// </summary>
internal static class BenchRingCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench ring", args, ["tokens", "shards", "layout", "mask", "hq", "hkv", "d", "repeat", "backend"], []);
        int tokens = options.Int("tokens", 16384, 1);
        int shards = options.Int("shards", 2, 1, 64);
        (int hq, int hkv) = options.Heads(8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int repeat = options.Int("repeat", 3, 1);
        ContextLayout layout = options.Layout("zigzag");
        AttentionMask mask = options.Mask("causal");
        if (mask.Document)
        {
            throw new UsageException("bench ring: document masks need document ids; use attend with a doc_ids tensor");
        }

        IAttentionBackend backend = options.Backend();
        _ = PlanCommand.CreatePlan("bench ring", layout, shards, tokens, hq, hkv);
        var shape = new AttentionShape(tokens, tokens, hq, hkv, d);
        float[] q = TensorChecks.Synthetic(DType.F32, 1, tokens, hq, d).AsSpan<float>().ToArray();
        float[] k = TensorChecks.Synthetic(DType.F32, 2, tokens, hkv, d).AsSpan<float>().ToArray();
        float[] v = TensorChecks.Synthetic(DType.F32, 3, tokens, hkv, d).AsSpan<float>().ToArray();
        var singleO = new float[shape.QueryElements];
        var singleL = new float[shape.LseElements];
        var shardedO = new float[shape.QueryElements];
        var shardedL = new float[shape.LseElements];

        double single = Median(repeat, () =>
            backend.Forward<float>(q, k, v, shape, mask, default, singleO, singleL, new AttentionOptions { MaxThreads = 1 }));
        var chunks = new List<ChunkTimings>();
        double parallel = Median(repeat, () =>
        {
            using var sequence = new ShardedSequence<float>(layout, shards, hq, hkv, d, mask, new AttentionOptions { MaxThreads = shards }) { Backend = backend };
            sequence.PrefillAsync(q, k, v, shardedO, shardedL).GetAwaiter().GetResult();
            chunks.Add(sequence.LastChunk!);
        });
        ChunkTimings timings = chunks.Skip(1).OrderBy(c => c.Total).ElementAt(repeat / 2);
        double ring = timings.Ranks.Max(r => (r.Compute + r.Waiting).TotalSeconds);

        double maxRef = singleO.Max(Math.Abs);
        double maxError = singleO.Zip(shardedO, (a, b) => (double)Math.Abs(a - b)).Max();
        double efficiency = single / (shards * parallel);
        IAnsiConsole console = CliConsole.For(stdout);
        Table cases = CliConsole.Table(console, "case", ">median ms", ">distribute ms", ">scatter ms", ">compute ms", ">waiting ms", ">gather ms", ">collect ms")
            .AddRow("single node, 1 thread", Ms(single * 1000), "", "", "", "", "", "")
            .AddRow($"{layout}, {shards} ranks x 1 thread", Ms(parallel * 1000), Ms(timings.Distribute.TotalMilliseconds), "", "", "", "", Ms(timings.Collect.TotalMilliseconds));
        for (int r = 0; r < timings.Ranks.Count; r++)
        {
            RankTimings t = timings.Ranks[r];
            cases.AddRow(
                $"  rank {r}", "", "", Ms(t.Scatter.TotalMilliseconds), Ms(t.Compute.TotalMilliseconds), Ms(t.Waiting.TotalMilliseconds), Ms(t.Gather.TotalMilliseconds), "");
        }

        console.Write(cases);
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"parallel efficiency single / (P x parallel) = {efficiency:F3} (whole call), {single / (shards * ring):F3} (ring phase: slowest rank's compute + waiting)"));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"max |O diff| / max |O| = {maxError / maxRef:E2}"));
        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokens"] = tokens,
            ["shards"] = shards,
            ["layout"] = layout.ToString(),
            ["mask"] = mask.ToString(),
            ["single_ms"] = Math.Round(single * 1000, 2),
            ["parallel_ms"] = Math.Round(parallel * 1000, 2),
            ["efficiency"] = Math.Round(efficiency, 4),
            ["ring_phase_ms"] = Math.Round(ring * 1000, 2),
            ["ring_phase_efficiency"] = Math.Round(single / (shards * ring), 4),
            ["relative_difference"] = maxError / maxRef,
            ["backend"] = backend.Name,
        }));
        return maxError <= 1e-4 * maxRef ? CliApp.ExitOk : CliApp.ExitFailed;
    }

    private static string Ms(double milliseconds) => milliseconds.ToString("F1", CultureInfo.InvariantCulture);

    private static double Median(int repeat, Action action) => BenchTimer.Median(BenchTimer.Measure(repeat, action));
}
