using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Planning;

/// <summary>The layout <see cref="LayoutPlanner.Choose"/> picked, its prediction, and every candidate it weighed (in preference order).</summary>
public sealed record LayoutChoice(ContextLayout Layout, LayerPrediction Prediction, IReadOnlyList<LayoutEvaluation> Candidates);
