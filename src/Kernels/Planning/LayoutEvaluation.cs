using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Planning;

/// <summary>One layout on one node count: its prediction, or why it cannot run there (<see cref="Reason"/>, then <see cref="Prediction"/> is null).</summary>
public sealed record LayoutEvaluation(ContextLayout Layout, int Nodes, LayerPrediction? Prediction, string? Reason)
{
    public bool CanRun => Prediction is not null;
}
