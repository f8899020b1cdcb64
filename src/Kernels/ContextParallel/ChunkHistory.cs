namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// What the chunks of a sequence covered so far, to refuse a chunk whose keys queries of earlier chunks could see:
/// earlier results are final, so chunk boundaries must follow the mask (causal masks: later positions; prefix:N: the
/// whole prefix in the first chunk; document: whole documents per chunk; full: one chunk).
/// </summary>
public sealed class ChunkHistory(AttentionMask mask)
{
    private TileRange? _seen;

    /// <summary>Throws <see cref="ArgumentException"/> (parameter <c>positions</c>) if earlier queries could see this chunk's keys.</summary>
    public void EnsureCanAppend(ReadOnlySpan<long> positions, ReadOnlySpan<int> documents)
    {
        TileRange chunk = TileRange.Of(positions, mask.Document ? documents : default);
        if (_seen is { } history && mask.Classify(history, chunk) != TileVisibility.Hidden)
        {
            throw new ArgumentException(
                $"under mask {mask}, queries of earlier chunks (positions {history.MinPosition}..{history.MaxPosition}) could see keys of this chunk " +
                $"(positions {chunk.MinPosition}..{chunk.MaxPosition}), and earlier results are final: chunk boundaries must follow the mask " +
                "(causal masks: later positions; prefix:N: the whole prefix in the first chunk; document: whole documents per chunk; full: one chunk)",
                nameof(positions));
        }
    }

    /// <summary>Records a chunk (or decoded token) as done.</summary>
    public void Add(ReadOnlySpan<long> positions, ReadOnlySpan<int> documents)
    {
        if (positions.IsEmpty)
        {
            return;
        }

        TileRange chunk = TileRange.Of(positions, mask.Document ? documents : default);
        _seen = _seen is { } seen
            ? new TileRange(
                Math.Min(seen.MinPosition, chunk.MinPosition),
                Math.Max(seen.MaxPosition, chunk.MaxPosition),
                Math.Min(seen.MinDocument, chunk.MinDocument),
                Math.Max(seen.MaxDocument, chunk.MaxDocument))
            : chunk;
    }
}
