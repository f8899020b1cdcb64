using System.Buffers;
using System.Runtime.CompilerServices;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// The sections of a frame of KV rows — a segment a rank stores, and the block a ring step passes on (the same
/// frame, so a stored segment travels without a copy): global positions <c>[n]</c>, document ids <c>[n]</c> (empty
/// when the rows carry none), K and V <c>[n, kvHeads, d]</c>.
/// </summary>
internal readonly ref struct KeyValueFrame<T>
    where T : unmanaged
{
    private const int PositionsSection = 0;
    private const int DocumentsSection = 1;
    private const int KeySection = 2;
    private const int ValueSection = 3;
    private const int Sections = 4;

    public KeyValueFrame(Frame frame)
    {
        // Frames also arrive from peers: a malformed one must fail here, not read the wrong rows.
        if (frame.SectionCount != Sections)
        {
            throw new InvalidDataException($"a KV frame has {Sections} sections, this one {frame.SectionCount}");
        }

        Positions = frame.Section<long>(PositionsSection);
        Documents = frame.Section<int>(DocumentsSection);
        Key = frame.Section<T>(KeySection);
        Value = frame.Section<T>(ValueSection);
    }

    public Span<long> Positions { get; }

    public Span<int> Documents { get; }

    public Span<T> Key { get; }

    public Span<T> Value { get; }

    public int Rows => Positions.Length;

    /// <summary>
    /// A pooled frame for <paramref name="rows"/> KV rows with <paramref name="documentRows"/> document ids (rows or 0)
    /// and <paramref name="keyValueElements"/> elements each of K and V (rows · kvHeads · d): from the
    /// <see cref="LargeBuffers{T}"/> for a segment a rank keeps, from the shared pool for one that only travels. K starts
    /// on a cache line, and so does V when K's bytes are a multiple of 64 (d · sizeof(T) a multiple of 64, or rows ·
    /// kvHeads making it one).
    /// </summary>
    public static Frame Create(int rows, int documentRows, int keyValueElements, bool stored) => Frame.Create(
        stored ? LargeBuffers<byte>.Pool : ArrayPool<byte>.Shared,
        [
            checked(rows * sizeof(long)),
            checked(documentRows * sizeof(int)),
            checked(keyValueElements * Unsafe.SizeOf<T>()),
            checked(keyValueElements * Unsafe.SizeOf<T>()),
        ],
        KeySection);

    /// <summary>Bytes of positions, document ids, K and V (the header and padding not counted).</summary>
    public long PayloadBytes => (Positions.Length * (long)sizeof(long)) + (Documents.Length * (long)sizeof(int)) + ((Key.Length + (long)Value.Length) * Unsafe.SizeOf<T>());
}
