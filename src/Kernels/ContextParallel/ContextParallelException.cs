namespace LongCluster.Kernels.ContextParallel;

/// <summary>A context-parallel run that failed; names the rank and the step where it did. No partial result is returned.</summary>
public sealed class ContextParallelException : Exception
{
    public ContextParallelException(int rank, string step, Exception inner)
        : base($"rank {rank} failed at {step}: {inner.Message}", inner)
    {
        Rank = rank;
        Step = step;
    }

    public int Rank { get; }

    /// <summary>Where the rank was: "scatter all-to-all", "ring step s of R", "gather all-to-all".</summary>
    public string Step { get; }
}
