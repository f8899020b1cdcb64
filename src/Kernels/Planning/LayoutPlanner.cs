using System.Globalization;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Planning;

/// <summary>Layouts weighed by <see cref="LayerCostModel"/>: one on one node count, or the fastest of all that can run.</summary>
public static class LayoutPlanner
{
    /// <summary>
    /// Predictions within this fraction (0.1%) of the fastest count as a tie, and the tie goes to the preferred layout
    /// (<see cref="Candidates"/>' order): layouts with the same live pairs and traffic (every ring layout under a full
    /// mask, every layout on one node) differ only where the chunk does not divide evenly — a row more here or there —
    /// and a model is not that exact anyway.
    /// </summary>
    public const double TieTolerance = 1e-3;

    /// <summary>
    /// <paramref name="layout"/> on <paramref name="nodes"/> nodes: its prediction, or why it cannot run — the layout
    /// plan refuses it (the node count is not a multiple of the Ulysses degree, the degree does not divide the heads),
    /// or the chunk leaves a rank without tokens (unless <paramref name="allowIdleRanks"/>).
    /// </summary>
    public static LayoutEvaluation Evaluate(ContextLayout layout, int nodes, ChunkShape chunk, HardwareProfile hw, bool allowIdleRanks = false)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(chunk);
        ArgumentNullException.ThrowIfNull(hw);
        LayoutPlan plan;
        try
        {
            plan = new LayoutPlan(layout, nodes, chunk.Tokens, chunk.QueryHeads, chunk.KeyValueHeads);
        }
        catch (ArgumentException e)
        {
            return new LayoutEvaluation(layout, nodes, null, FirstSentence(e.Message));
        }

        if (!allowIdleRanks)
        {
            for (int rank = 0; rank < nodes; rank++)
            {
                if (plan.RankTokens(rank).Length == 0)
                {
                    // Zigzag cuts the chunk into 2R pieces; every layout then needs a token per rank.
                    int parts = layout.Kind is LayoutKind.Zigzag or LayoutKind.Hybrid ? Math.Max(2 * plan.RingDegree, nodes) : nodes;
                    return new LayoutEvaluation(
                        layout, nodes, null, string.Create(CultureInfo.InvariantCulture, $"{chunk.Tokens} tokens leave rank {rank} idle (it needs at least {parts})"));
                }
            }
        }

        return new LayoutEvaluation(layout, nodes, LayerCostModel.Predict(plan, chunk.Mask, chunk.HeadDim, chunk.ElementSize, hw, chunk.DocumentLength), null);
    }

    /// <summary>
    /// The layouts <see cref="Choose"/> weighs on <paramref name="nodes"/> nodes, most preferred first: for full
    /// masks (with or without documents) contiguous, zigzag, striped; for any other mask zigzag (balanced under
    /// causal masks), striped, contiguous; then hybrid:U for U = 2, 4, … below the node count and dividing it; then
    /// ulysses.
    /// </summary>
    public static IReadOnlyList<ContextLayout> Candidates(int nodes, AttentionMask mask)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nodes, 1);
        var layouts = mask.Kind == MaskKind.Full
            ? new List<ContextLayout> { ContextLayout.Contiguous, ContextLayout.Zigzag, ContextLayout.Striped() }
            : new List<ContextLayout> { ContextLayout.Zigzag, ContextLayout.Striped(), ContextLayout.Contiguous };
        for (int u = 2; u < nodes; u *= 2)
        {
            if (nodes % u == 0)
            {
                layouts.Add(ContextLayout.Hybrid(u));
            }
        }

        if (nodes > 1)
        {
            layouts.Add(ContextLayout.Ulysses);
        }

        return layouts;
    }

    /// <summary>
    /// The layout predicted fastest for <paramref name="chunk"/> on <paramref name="nodes"/> nodes among
    /// <see cref="Candidates"/> that can run; a tie (<see cref="TieTolerance"/>) goes to the earlier candidate. When
    /// the chunk is too short for any candidate to give every rank tokens, ranks are allowed to idle.
    /// </summary>
    public static LayoutChoice Choose(int nodes, ChunkShape chunk, HardwareProfile hw)
    {
        ArgumentNullException.ThrowIfNull(chunk);
        IReadOnlyList<ContextLayout> layouts = Candidates(nodes, chunk.Mask);
        LayoutEvaluation[] evaluations = [.. layouts.Select(l => Evaluate(l, nodes, chunk, hw))];
        if (!evaluations.Any(e => e.CanRun))
        {
            evaluations = [.. layouts.Select(l => Evaluate(l, nodes, chunk, hw, allowIdleRanks: true))];
        }

        // Contiguous (a ring layout) always has a plan, so there is a runnable candidate here.
        double fastest = evaluations.Where(e => e.CanRun).Min(e => e.Prediction!.LayerMs);
        LayoutEvaluation chosen = evaluations.First(e => e.CanRun && e.Prediction!.LayerMs <= fastest * (1 + TieTolerance));
        return new LayoutChoice(chosen.Layout, chosen.Prediction!, evaluations);
    }

    /// <summary>A layout plan's refusal without its parameter-name suffix.</summary>
    private static string FirstSentence(string message)
    {
        int suffix = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        return suffix < 0 ? message : message[..suffix];
    }
}
