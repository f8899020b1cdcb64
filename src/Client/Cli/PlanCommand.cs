using System.Globalization;
using System.Text;
using System.Text.Json;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster plan</c>: the per-step, per-shard live work of a layout and mask, the load imbalance and the
/// bytes each shard sends — from positions alone, so it answers instantly for any length.
/// </summary>
internal static class PlanCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse(
            "plan", args, ["tokens", "shards", "layout", "mask", "hq", "hkv", "d", "dtype", "doc-len", "model", "nodes", "layouts", "png", "out"], ["calibrate"]);
        if (options.Has("calibrate"))
        {
            return Calibrate(options, stdout);
        }

        if (options.Has("model"))
        {
            Refuse(options, "does not go with --model (it sweeps --nodes and --layouts)", "shards", "layout");
        Refuse(options, "needs --calibrate", "out");
            return PlanModelCommand.Run(options, stdout);
        }

        Refuse(options, "needs --model", "nodes", "layouts", "png");
        Refuse(options, "needs --calibrate", "out");
        int tokens = options.Int("tokens", 0, 1);
        if (!options.Has("tokens"))
        {
            throw new UsageException("plan: --tokens is required");
        }

        int shards = options.Int("shards", 0, 1, 4096);
        if (!options.Has("shards"))
        {
            throw new UsageException("plan: --shards is required");
        }

        (int hq, int hkv) = options.Heads(8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int documentLength = options.Int("doc-len", 4096, 1);
        ContextLayout layout = options.Layout("zigzag");
        AttentionMask mask = options.Mask("causal");
        DType dtype = options.FloatType("dtype", "f32");
        string dtypeText = dtype.SafetensorsName().ToLowerInvariant();

        LayoutPlan plan = CreatePlan("plan", layout, shards, tokens, hq, hkv);
        RingSchedule schedule = RingSchedule.Create(plan, mask, d, dtype.Size(), documentLength);

        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"plan: T={tokens} P={shards} layout={layout} (ring {plan.RingDegree} x ulysses {plan.UlyssesDegree}) mask={mask} Hq={hq} Hkv={hkv} d={d} {dtypeText}");
        text.AppendLine("live pairs per ring shard and step, in millions (one head; 'skip' = no live tile, no compute):");
        text.Append(CultureInfo.InvariantCulture, $"{"step",6}");
        for (int i = 0; i < plan.RingDegree; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"{"shard " + i,12}");
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"{"max",12}{"mean",12}");
        var pairs = new List<long[]>();
        for (int s = 0; s < schedule.Steps; s++)
        {
            text.Append(CultureInfo.InvariantCulture, $"{s,6}");
            long[] row = Enumerable.Range(0, plan.RingDegree).Select(i => schedule.LivePairs(s, i)).ToArray();
            pairs.Add(row);
            for (int i = 0; i < plan.RingDegree; i++)
            {
                string cell = schedule.LiveTiles(s, i) == 0 ? "skip" : (row[i] / 1e6).ToString("F2", CultureInfo.InvariantCulture);
                text.Append(CultureInfo.InvariantCulture, $"{cell,12}");
            }

            text.AppendLine(CultureInfo.InvariantCulture, $"{row.Max() / 1e6,12:F2}{row.Average() / 1e6,12:F2}");
        }

        text.AppendLine(CultureInfo.InvariantCulture, $"imbalance (sum of step max / sum of step mean): {schedule.Imbalance:F4}");
        text.AppendLine(CultureInfo.InvariantCulture, $"work: {schedule.TotalWork / 1e9:F3} G pair-heads in all, critical path {schedule.CriticalPathWork / 1e9:F3} G pair-heads per rank");
        text.Append("bytes sent per rank (MiB):");
        for (int r = 0; r < plan.Shards; r++)
        {
            text.Append(CultureInfo.InvariantCulture, $" {schedule.BytesSent[r] / 1048576.0:F1}");
        }

        stdout.WriteLine(text.ToString());
        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["tokens"] = tokens,
            ["shards"] = shards,
            ["layout"] = layout.ToString(),
            ["mask"] = mask.ToString(),
            ["ring_degree"] = plan.RingDegree,
            ["ulysses_degree"] = plan.UlyssesDegree,
            ["imbalance"] = Math.Round(schedule.Imbalance, 6),
            ["live_pairs"] = pairs,
            ["bytes_sent"] = schedule.BytesSent,
        }));
        return CliApp.ExitOk;
    }

    /// <summary><c>plan --calibrate [--out FILE]</c>: measures this machine and prints (or writes) its profile.</summary>
    private static int Calibrate(CommandLine options, TextWriter stdout)
    {
        Refuse(options, "does not go with --calibrate", "tokens", "shards", "layout", "mask", "hq", "hkv", "d", "dtype", "doc-len", "model", "nodes", "layouts", "png");
        HardwareProfile profile = ProfileCalibration.Measure(stdout);
        string json = profile.ToJson();
        if (options.Text("out") is { } path)
        {
            File.WriteAllText(path, json + "\n");
            stdout.WriteLine($"calibrate: wrote {path}");
        }
        else
        {
            stdout.WriteLine(json);
        }

        return CliApp.ExitOk;
    }

    /// <summary>Options that do not go with a mode are refused, not ignored.</summary>
    private static void Refuse(CommandLine options, string why, params string[] names)
    {
        foreach (string name in names)
        {
            if (options.Has(name))
            {
                throw new UsageException($"plan: --{name} {why}");
            }
        }
    }

    internal static LayoutPlan CreatePlan(string command, ContextLayout layout, int shards, int tokens, int hq, int hkv)
    {
        try
        {
            return new LayoutPlan(layout, shards, tokens, hq, hkv);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"{command}: {e.Message}");
        }
    }
}
