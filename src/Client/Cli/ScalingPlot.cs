using System.Globalization;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using ScottPlot;

namespace LongCluster.Cli;

/// <summary>
/// The PNG of <c>plan --model --png</c> (ScottPlot 5): two panels side by side, efficiency and tokens/s against the
/// node count on a log2 axis (tokens/s on a log10 axis), one line per layout; a layout's line skips the node counts
/// where it cannot run.
/// </summary>
internal static class ScalingPlot
{
    private const int PanelWidth = 900;
    private const int Height = 600;

    public static void Write(string path, string title, IReadOnlyList<ContextLayout> layouts, IReadOnlyList<LayoutEvaluation> points)
    {
        // Legends where the lines are not: efficiency falls toward the lower right, tokens/s starts low on the left.
        Plot efficiency = Panel($"{title}: efficiency", "efficiency: single node / P over layer time (%)", points, Alignment.LowerLeft);
        Plot throughput = Panel($"{title}: tokens/s", "tokens/s of one layer (log10)", points, Alignment.UpperLeft);
        // Layouts that predict the same (zigzag and striped, or all of them on one node) would hide each other.
        LinePattern[] patterns = [LinePattern.Solid, LinePattern.Dashed, LinePattern.Dotted];
        int index = 0;
        foreach (ContextLayout layout in layouts)
        {
            LinePattern pattern = patterns[index++ % patterns.Length];
            LayoutEvaluation[] line = [.. points.Where(p => p.Layout == layout && p.CanRun).OrderBy(p => p.Nodes)];
            if (line.Length == 0)
            {
                continue;
            }

            double[] x = [.. line.Select(p => Math.Log2(p.Nodes))];
            AddLine(efficiency, x, [.. line.Select(p => p.Prediction!.Efficiency * 100)], layout.ToString(), pattern);
            AddLine(throughput, x, [.. line.Select(p => Math.Log10(p.Prediction!.TokensPerSecond))], layout.ToString(), pattern);
        }

        efficiency.Axes.SetLimitsY(0, 105);
        LogTicks(throughput.Axes.Left, points.Where(p => p.CanRun).Select(p => p.Prediction!.TokensPerSecond));
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }

        var multiplot = new Multiplot(efficiency);
        multiplot.AddPlot(throughput);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        multiplot.SavePng(path, 2 * PanelWidth, Height);
    }

    private static Plot Panel(string title, string yLabel, IReadOnlyList<LayoutEvaluation> points, Alignment legend)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("nodes (log2)");
        plot.YLabel(yLabel);
        int[] nodes = [.. points.Select(p => p.Nodes).Distinct().Order()];
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        foreach (int n in nodes)
        {
            ticks.AddMajor(Math.Log2(n), n.ToString(CultureInfo.InvariantCulture));
        }

        plot.Axes.Bottom.TickGenerator = ticks;
        plot.ShowLegend(legend);
        return plot;
    }

    private static void AddLine(Plot plot, double[] x, double[] y, string label, LinePattern pattern)
    {
        ScottPlot.Plottables.Scatter scatter = plot.Add.Scatter(x, y);
        scatter.LegendText = label;
        scatter.LineWidth = 2;
        scatter.LinePattern = pattern;
        scatter.MarkerSize = 6;
    }

    /// <summary>Ticks at the powers of ten the values span, for an axis that plots log10 of them.</summary>
    private static void LogTicks(IAxis axis, IEnumerable<double> values)
    {
        double[] all = [.. values.Where(v => v > 0)];
        if (all.Length == 0)
        {
            return;
        }

        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int e = (int)Math.Floor(Math.Log10(all.Min())); e <= (int)Math.Ceiling(Math.Log10(all.Max())); e++)
        {
            ticks.AddMajor(e, "1e" + e.ToString(CultureInfo.InvariantCulture));
        }

        axis.TickGenerator = ticks;
    }
}
