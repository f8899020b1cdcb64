using LongCluster.Kernels.ContextParallel;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

/// <summary>
/// A KV frame puts K (and V, when K's bytes are whole lines) on a cache line wherever its pooled buffer starts, and its
/// bytes are still the wire format: a frame read back from them has the same sections.
/// </summary>
public sealed class FrameTests
{
    [Theory]
    [InlineData(1, 0, true)]
    [InlineData(3, 3, true)]
    [InlineData(17, 17, false)]
    [InlineData(1000, 0, false)]
    [InlineData(20000, 20000, true)]
    public unsafe void KeyValueFrame_KeyAndValueStartOnALine_AndSurviveTheWire(int rows, int documentRows, bool stored)
    {
        const int kvHeads = 2, d = 64;
        int elements = rows * kvHeads * d;
        using Frame frame = KeyValueFrame<BFloat16>.Create(rows, documentRows, elements, stored);
        var kv = new KeyValueFrame<BFloat16>(frame);
        for (int i = 0; i < rows; i++)
        {
            kv.Positions[i] = (7L * i) + 3;
        }

        for (int i = 0; i < documentRows; i++)
        {
            kv.Documents[i] = i % 5;
        }

        for (int i = 0; i < elements; i++)
        {
            kv.Key[i] = (BFloat16)(i % 251);
            kv.Value[i] = (BFloat16)(-(i % 241));
        }

        fixed (BFloat16* key = kv.Key, value = kv.Value)
        {
            Assert.Equal(0, (long)key % HugePages.LineBytes);
            Assert.Equal(0, (long)value % HugePages.LineBytes);
        }

        using Frame received = Frame.FromBytes(frame.Bytes);
        var copy = new KeyValueFrame<BFloat16>(received);
        Assert.Equal(frame.Length, received.Length);
        Assert.True(kv.Positions.SequenceEqual(copy.Positions));
        Assert.True(kv.Documents.SequenceEqual(copy.Documents));
        Assert.True(kv.Key.SequenceEqual(copy.Key));
        Assert.True(kv.Value.SequenceEqual(copy.Value));
        Assert.True(frame.Bytes.SequenceEqual(frame.Memory.Span));
    }
}
