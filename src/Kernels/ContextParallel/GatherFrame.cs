namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// The sections of a Ulysses gather frame: one member's results for another member's rows, its own query heads only —
/// O <c>[n, qHeads, d]</c> and LSE <c>[n, qHeads]</c>.
/// </summary>
internal readonly ref struct GatherFrame
{
    private const int OutputSection = 0;
    private const int LogSumExpSection = 1;
    private const int Sections = 2;

    public GatherFrame(Frame frame)
    {
        if (frame.SectionCount != Sections)
        {
            throw new InvalidDataException($"a gather frame has {Sections} sections, this one {frame.SectionCount}");
        }

        Output = frame.Section<float>(OutputSection);
        LogSumExp = frame.Section<float>(LogSumExpSection);
    }

    public Span<float> Output { get; }

    public Span<float> LogSumExp { get; }

    /// <summary>A pooled frame for <paramref name="rows"/> rows of <paramref name="heads"/> query heads of dimension <paramref name="headDim"/>.</summary>
    public static Frame Create(int rows, int heads, int headDim) => Frame.Create(
        checked(rows * heads * headDim * sizeof(float)),
        checked(rows * heads * sizeof(float)));
}
