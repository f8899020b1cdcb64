using LongCluster.Contracts;

namespace LongCluster.Client;

/// <summary>One layer's result in token order: O <c>[T, Hq, d]</c> and LSE <c>[T, Hq]</c> (f32), and the run's timings.</summary>
public sealed record LayerOutput(float[] Output, float[] LogSumExp, LayerRunResult Run);
