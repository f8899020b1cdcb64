using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LongCluster.Grains;

/// <summary>
/// A byte array seen as elements of <typeparamref name="T"/> without a copy: a shard's uploaded rows handed to its rank,
/// and the O and LSE rows the rank writes straight into the bytes the shard keeps for the client to read.
/// </summary>
internal sealed class ByteMemory<T> : MemoryManager<T>
    where T : unmanaged
{
    private readonly byte[] _bytes;

    private ByteMemory(byte[] bytes) => _bytes = bytes;

    /// <summary>The bytes as elements; their count must be a whole number of elements.</summary>
    public static Memory<T> Of(byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        if (bytes.Length % Unsafe.SizeOf<T>() != 0)
        {
            throw new ArgumentException($"{bytes.Length} bytes are not a whole number of {Unsafe.SizeOf<T>()}-byte {typeof(T).Name} elements", nameof(bytes));
        }

        return new ByteMemory<T>(bytes).Memory;
    }

    public override Span<T> GetSpan() => MemoryMarshal.Cast<byte, T>(_bytes.AsSpan());

    public override unsafe MemoryHandle Pin(int elementIndex = 0)
    {
        // Disposing the handle frees the GC handle; Unpin has nothing more to do.
        GCHandle handle = GCHandle.Alloc(_bytes, GCHandleType.Pinned);
        return new MemoryHandle((byte*)handle.AddrOfPinnedObject() + ((long)elementIndex * Unsafe.SizeOf<T>()), handle, this);
    }

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
