using LongCluster.Contracts;

namespace LongCluster.Grains;

/// <summary>
/// Where a sequence stands in its coordinator: one record per phase, replaced whole (so the coordinator's
/// interleaved reads never see half a change) and only by <c>CoordinatorGrain.Move</c>. Every phase knows the
/// tokens done in every layer (<see cref="Length"/>), the index of the next chunk and the plan of the last one
/// begun (its outputs stay readable after it ends).
/// </summary>
internal abstract record SequencePhase(long Length, int NextChunk, ChunkPlan? LastChunk)
{
    /// <summary>The state clients see (<see cref="SequenceState.Degraded"/> is decided by the coordinator, beside the phase).</summary>
    public abstract SequenceState State { get; }

    /// <summary>No sequence: never created here, or its coordinator's silo failed and this is a fresh activation.</summary>
    internal sealed record Absent() : SequencePhase(0, 0, null)
    {
        public override SequenceState State => SequenceState.Deleted;
    }

    /// <summary>Created (no tokens yet) or Ready: every chunk so far is done in every layer; a chunk or a decode step may start.</summary>
    internal sealed record Idle(long Length, int NextChunk, ChunkPlan? LastChunk) : SequencePhase(Length, NextChunk, LastChunk)
    {
        public override SequenceState State => Length == 0 && LastChunk is null ? SequenceState.Created : SequenceState.Ready;
    }

    /// <summary>
    /// Chunk <see cref="Chunk"/> is in flight with its first <see cref="LayersDone"/> layers done; its tokens (and
    /// document ids) join the history when the last layer is done.
    /// </summary>
    internal sealed record Prefilling(long Length, int NextChunk, ChunkPlan Chunk, long[] Positions, int[] Documents, int LayersDone)
        : SequencePhase(Length, NextChunk, Chunk)
    {
        public override SequenceState State => SequenceState.Prefilling;
    }

    /// <summary>The decode step of token <see cref="SequencePhase.Length"/> has run its first <see cref="LayersDone"/> layers (≥ 1).</summary>
    internal sealed record Decoding(long Length, int NextChunk, ChunkPlan? LastChunk, int LayersDone) : SequencePhase(Length, NextChunk, LastChunk)
    {
        public override SequenceState State => SequenceState.Ready;
    }

    /// <summary>Deleted: every shard freed its memory; the activation goes away when idle.</summary>
    internal sealed record Deleted() : SequencePhase(0, 0, null)
    {
        public override SequenceState State => SequenceState.Deleted;
    }

    /// <summary>Whether the life cycle has a move from <paramref name="from"/> to <paramref name="to"/>.</summary>
    public static bool CanMove(SequencePhase from, SequencePhase to) => (from, to) switch
    {
        (Absent or Deleted, Idle) => true, // created
        (Idle, Prefilling) => true, // a chunk begins
        (Prefilling, Prefilling or Idle) => true, // a layer of the chunk is done; the last one
        (Idle or Decoding, Decoding or Idle) => true, // a decode layer is done; the last one
        (Idle or Prefilling or Decoding, Deleted) => true,
        _ => false,
    };
}
