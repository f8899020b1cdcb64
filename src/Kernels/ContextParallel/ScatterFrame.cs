using System.Runtime.CompilerServices;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// The sections of a Ulysses scatter frame: one rank's rows restricted to the heads of the group member it goes to —
/// global positions <c>[n]</c>, document ids <c>[n]</c> (empty when the rows carry none), Q <c>[n, qHeads, d]</c>,
/// K and V <c>[n, kvHeads, d]</c>.
/// </summary>
internal readonly ref struct ScatterFrame<T>
    where T : unmanaged
{
    private const int PositionsSection = 0;
    private const int DocumentsSection = 1;
    private const int QuerySection = 2;
    private const int KeySection = 3;
    private const int ValueSection = 4;
    private const int Sections = 5;

    public ScatterFrame(Frame frame)
    {
        if (frame.SectionCount != Sections)
        {
            throw new InvalidDataException($"a scatter frame has {Sections} sections, this one {frame.SectionCount}");
        }

        Positions = frame.Section<long>(PositionsSection);
        Documents = frame.Section<int>(DocumentsSection);
        Query = frame.Section<T>(QuerySection);
        Key = frame.Section<T>(KeySection);
        Value = frame.Section<T>(ValueSection);
    }

    public Span<long> Positions { get; }

    public Span<int> Documents { get; }

    public Span<T> Query { get; }

    public Span<T> Key { get; }

    public Span<T> Value { get; }

    public int Rows => Positions.Length;

    /// <summary>A pooled frame for <paramref name="rows"/> rows of <paramref name="queryElements"/> Q and <paramref name="keyValueElements"/> K/V elements each.</summary>
    public static Frame Create(int rows, int documentRows, int queryElements, int keyValueElements) => Frame.Create(
        checked(rows * sizeof(long)),
        checked(documentRows * sizeof(int)),
        checked(rows * queryElements * Unsafe.SizeOf<T>()),
        checked(rows * keyValueElements * Unsafe.SizeOf<T>()),
        checked(rows * keyValueElements * Unsafe.SizeOf<T>()));
}
