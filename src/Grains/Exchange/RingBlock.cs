using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Grains.Exchange;

/// <summary>
/// A ring block as a grain-call argument. <see cref="RingBlockCodec"/> writes the frame's bytes straight from its
/// pooled buffer and reads them on the receiving silo straight into a pooled buffer (no array per block on the
/// large-object heap, no second copy); a call within one silo hands over another reference. The receiver owns
/// <see cref="Frame"/> (one reference) and passes it on or disposes it.
/// </summary>
[Immutable]
public sealed class RingBlock(Frame frame)
{
    public Frame Frame { get; } = frame;
}
