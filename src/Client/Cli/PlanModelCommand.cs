using System.Globalization;
using System.Text.Json;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;
using Spectre.Console;
using static System.FormattableString;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster plan --model PROFILE</c>: <see cref="LayerCostModel"/>'s predicted layer time, efficiency and
/// tokens/s for every layout at every node count, from the ring schedule alone; layouts that cannot run at a node
/// count are listed with the reason. A table, an optional PNG, and a JSON line last.
/// </summary>
internal static class PlanModelCommand
{
    /// <summary>The node counts swept by default: 1, 2, 4, …, 1024.</summary>
    private static readonly int[] DefaultNodes = [.. Enumerable.Range(0, 11).Select(i => 1 << i)];

    private const string DefaultLayouts = "zigzag,striped,contiguous,ulysses,hybrid:2";

    public static int Run(CommandLine options, TextWriter stdout)
    {
        HardwareProfile profile;
        try
        {
            profile = HardwareProfile.Load(options.RequiredText("model"));
        }
        catch (HardwareProfileException e)
        {
            throw new UsageException($"plan: --model: {e.Message}");
        }

        int[] nodes = options.Has("nodes") ? options.IntList("nodes", 1, 1 << 20) : DefaultNodes;
        int tokens = options.Int("tokens", 65536, 1);
        (int hq, int hkv) = options.Heads(32, options.Has("hq") ? null : 8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int documentLength = options.Int("doc-len", 4096, 1);
        AttentionMask mask = options.Mask("causal");
        DType dtype = options.FloatType("dtype", "f32");
        ContextLayout[] layouts = Layouts(options.Text("layouts") ?? DefaultLayouts);
        var chunk = new ChunkShape(tokens, hq, hkv, d, dtype.Size(), mask, documentLength);

        LayoutEvaluation[] points = [.. nodes.SelectMany(n => layouts.Select(l => LayoutPlanner.Evaluate(l, n, chunk, profile)))];

        stdout.WriteLine(Invariant(
            $"plan --model {profile.Name}: T={tokens} Hq={hq} Hkv={hkv} d={d} {dtype.SafetensorsName().ToLowerInvariant()} mask={mask}; {profile.KernelGflops:F0} GFLOP/s per node{(profile.SharedHost ? " (shared by the nodes)" : "")}, {profile.LinkGbitPerSecond:G4} Gbit/s{(profile.LinkShared ? " (shared)" : "")}, {profile.LinkLatencyMicroseconds:G4} us"));
        IAnsiConsole console = CliConsole.For(stdout);
        Table table = CliConsole.Table(
            console, ">nodes", "layout", ">layer ms", ">compute", ">waiting", ">all-to-all", ">overhead", ">efficiency", ">tokens/s", "note");
        foreach (LayoutEvaluation point in points)
        {
            if (point.Prediction is { } p)
            {
                table.AddRow(
                    Invariant($"{point.Nodes}"), point.Layout.ToString(), Ms(p.LayerMs), Ms(p.ComputeMs), Ms(p.WaitingMs), Ms(p.AllToAllMs), Ms(p.OverheadMs),
                    Invariant($"{p.Efficiency:P1}"), Invariant($"{p.TokensPerSecond:G4}"), "");
            }
            else
            {
                table.AddRow(Invariant($"{point.Nodes}"), point.Layout.ToString(), "-", "-", "-", "-", "-", "-", "-", Markup.Escape("cannot run: " + point.Reason));
            }
        }

        console.Write(table);
        if (options.Text("png") is { } png)
        {
            ScalingPlot.Write(png, $"{profile.Name}, T={tokens}, {mask}, Hq={hq}, Hkv={hkv}, d={d}", layouts, points);
            stdout.WriteLine($"plot: {png}");
        }

        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["profile"] = profile.Name,
            ["tokens"] = tokens,
            ["hq"] = hq,
            ["hkv"] = hkv,
            ["d"] = d,
            ["dtype"] = dtype.SafetensorsName().ToLowerInvariant(),
            ["mask"] = mask.ToString(),
            ["points"] = points.Select(Json).ToArray(),
        }));
        return CliApp.ExitOk;
    }

    private static Dictionary<string, object?> Json(LayoutEvaluation point)
    {
        var json = new Dictionary<string, object?>
        {
            ["nodes"] = point.Nodes,
            ["layout"] = point.Layout.ToString(),
        };
        if (point.Prediction is not { } p)
        {
            json["reason"] = point.Reason;
            return json;
        }

        json["layer_ms"] = Math.Round(p.LayerMs, 6);
        json["compute_ms"] = Math.Round(p.ComputeMs, 6);
        json["waiting_ms"] = Math.Round(p.WaitingMs, 6);
        json["all_to_all_ms"] = Math.Round(p.AllToAllMs, 6);
        json["transfer_ms"] = Math.Round(p.TransferMs, 6);
        json["overhead_ms"] = Math.Round(p.OverheadMs, 6);
        json["ideal_ms"] = Math.Round(p.IdealMs, 6);
        json["efficiency"] = Math.Round(p.Efficiency, 6);
        json["tokens_per_s"] = Math.Round(p.TokensPerSecond, 1);
        json["imbalance"] = Math.Round(p.Imbalance, 6);
        json["bytes_sent_max"] = p.BytesSentMax;
        return json;
    }

    private static string Ms(double ms) => ms.ToString(ms >= 100 ? "F1" : ms >= 1 ? "F3" : "F4", CultureInfo.InvariantCulture);

    private static ContextLayout[] Layouts(string text)
    {
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0)
        {
            throw new UsageException("plan: --layouts must list at least one layout");
        }

        try
        {
            return [.. parts.Select(ContextLayout.Parse).Distinct()];
        }
        catch (FormatException e)
        {
            throw new UsageException($"plan: --layouts: {e.Message}");
        }
    }
}
