namespace LongCluster.Kernels.Planning;

/// <summary>
/// <see cref="LayerCostModel"/>'s prediction for one layer of one chunk. Times are milliseconds on the critical path;
/// <see cref="LayerMs"/> = <see cref="ComputeMs"/> + <see cref="WaitingMs"/> + <see cref="AllToAllMs"/> +
/// <see cref="OverheadMs"/>.
/// </summary>
/// <param name="LayerMs">Predicted wall time of the layer.</param>
/// <param name="ComputeMs">Σ over ring steps of the slowest rank's kernel time.</param>
/// <param name="MeanComputeMs">Σ over ring steps of the mean rank's kernel time (a rank's own compute, as a rank's timings report it).</param>
/// <param name="WaitingMs">Σ over ring steps of the step time beyond the slowest rank's compute: the cores' own transport work and the transfer the compute did not hide.</param>
/// <param name="AllToAllMs">Scatter (Q/K/V heads) plus gather (O and LSE) inside the Ulysses groups; 0 without Ulysses.</param>
/// <param name="TransferMs">Σ over ring steps of the slowest next-block transfer, hidden or not (it is in <see cref="WaitingMs"/> only where it is not).</param>
/// <param name="OverheadMs">The profile's fixed costs: one per layer and one per ring step.</param>
/// <param name="IdealMs">The single-node compute time of the whole chunk divided by the node count.</param>
/// <param name="Efficiency"><see cref="IdealMs"/> / <see cref="LayerMs"/> (1 is perfect scaling).</param>
/// <param name="TokensPerSecond">Chunk tokens / <see cref="LayerMs"/>: one layer's attention throughput.</param>
/// <param name="Imbalance">The ring schedule's Σ step max / Σ step mean of the work.</param>
/// <param name="BytesSentMax">Most bytes any one rank sends in the layer (ring blocks and all-to-all).</param>
public sealed record LayerPrediction(
    double LayerMs,
    double ComputeMs,
    double MeanComputeMs,
    double WaitingMs,
    double AllToAllMs,
    double TransferMs,
    double OverheadMs,
    double IdealMs,
    double Efficiency,
    double TokensPerSecond,
    double Imbalance,
    long BytesSentMax);
