using System.Buffers;
using System.Runtime.InteropServices;
using LongCluster.Tensors;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// A binary message between ranks: a fixed header (section count, then each section's byte length) and raw
/// sections, each 8-byte aligned, in one pooled buffer. Tensors go in as their raw bytes (one copy, no per-element
/// serialization) and are read back as typed spans over the same buffer. Reference-counted: every holder
/// disposes its reference; the buffer returns to its pool when the last one does.
/// </summary>
public sealed class Frame : IDisposable
{
    private readonly ArrayPool<byte> _pool;
    private readonly byte[] _buffer;
    private readonly int _start;
    private readonly int[] _offsets;
    private readonly int[] _lengths;
    private int _references = 1;

    private Frame(ArrayPool<byte> pool, byte[] buffer, int start, int length, int[] offsets, int[] lengths)
    {
        _pool = pool;
        _buffer = buffer;
        _start = start;
        Length = length;
        _offsets = offsets;
        _lengths = lengths;
    }

    /// <summary>Total bytes including the header: what a transport puts on the wire.</summary>
    public int Length { get; }

    public int SectionCount => _lengths.Length;

    /// <summary>Rents a frame with sections of the given byte lengths; the caller fills them.</summary>
    public static Frame Create(params int[] sectionLengths) => Create(ArrayPool<byte>.Shared, sectionLengths);

    /// <summary>
    /// Rents a frame from <paramref name="pool"/> (a rank's stored segments have their own). With
    /// <paramref name="lineSection"/> set, the frame is placed in its buffer so that that section starts on a cache line
    /// (K of a KV frame: the decode kernel's row loads then do not straddle two lines; see
    /// <see cref="HugePages.AllocateAligned"/>). The placement is measured when the frame is created; a pooled array the
    /// GC moves later keeps its bytes, only not the alignment.
    /// </summary>
    internal static Frame Create(ArrayPool<byte> pool, int[] sectionLengths, int lineSection = -1)
    {
        ArgumentNullException.ThrowIfNull(sectionLengths);
        int header = Align(4 + (8 * sectionLengths.Length));
        var offsets = new int[sectionLengths.Length];
        long position = header;
        for (int i = 0; i < sectionLengths.Length; i++)
        {
            offsets[i] = checked((int)position);
            position = Align(position + sectionLengths[i]);
        }

        int length = checked((int)position);
        byte[] buffer = pool.Rent(lineSection < 0 ? length : checked(length + HugePages.LineBytes - 1));
        int start = lineSection < 0 ? 0 : HugePages.LineSkip(buffer, offsets[lineSection]);
        Span<byte> frame = buffer.AsSpan(start, length);
        MemoryMarshal.Write(frame, sectionLengths.Length);
        for (int i = 0; i < sectionLengths.Length; i++)
        {
            MemoryMarshal.Write(frame[(4 + (8 * i))..], (long)sectionLengths[i]);
        }

        return new Frame(pool, buffer, start, length, offsets, (int[])sectionLengths.Clone());
    }

    public Span<byte> Section(int index)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _references) <= 0, this);
        return _buffer.AsSpan(_start + _offsets[index], _lengths[index]);
    }

    public Span<T> Section<T>(int index)
        where T : unmanaged => MemoryMarshal.Cast<byte, T>(Section(index));

    /// <summary>The whole frame as bytes.</summary>
    public ReadOnlySpan<byte> Bytes => _buffer.AsSpan(_start, Length);

    /// <summary>The whole frame as memory, for writing to a socket; valid while the caller holds a reference.</summary>
    public ReadOnlyMemory<byte> Memory => _buffer.AsMemory(_start, Length);

    /// <summary>
    /// Copies a frame (as <see cref="Bytes"/> wrote it, received from another process) into a pooled buffer, checking
    /// that its header describes exactly that many bytes.
    /// </summary>
    public static Frame FromBytes(ReadOnlySpan<byte> bytes)
    {
        byte[] buffer = RentBuffer(bytes.Length);
        bytes.CopyTo(buffer);
        return Adopt(buffer, bytes.Length);
    }

    /// <summary>A pooled buffer for a frame of <paramref name="length"/> bytes that a transport reads straight into; hand it to <see cref="Adopt"/>.</summary>
    public static byte[] RentBuffer(int length) => length >= 4 && length <= Array.MaxLength
        ? ArrayPool<byte>.Shared.Rent(length)
        : throw new InvalidDataException($"a frame of {length} bytes cannot be received");

    /// <summary>
    /// The frame in the first <paramref name="length"/> bytes of <paramref name="buffer"/> (from <see cref="RentBuffer"/>),
    /// checking that its header describes exactly that many bytes; the frame returns the buffer to the pool when
    /// disposed, and so does a buffer that fails the check.
    /// </summary>
    public static Frame Adopt(byte[] buffer, int length)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        try
        {
            if (length < 4 || length > buffer.Length)
            {
                throw new InvalidDataException($"a frame of {length} bytes has no room for its header or does not fit its buffer");
            }

            int count = MemoryMarshal.Read<int>(buffer);
            long header = 4 + (8L * count);
            if (count < 0 || header > length)
            {
                throw new InvalidDataException($"frame header names {count} sections, which do not fit in {length} bytes");
            }

            int[] lengths = new int[count];
            int[] offsets = new int[count];
            long position = Align(header);
            for (int i = 0; i < count; i++)
            {
                long section = MemoryMarshal.Read<long>(buffer.AsSpan(4 + (8 * i)));
                if (section < 0 || position + section > length)
                {
                    throw new InvalidDataException($"frame section {i} of {section} bytes does not fit in {length} bytes");
                }

                lengths[i] = (int)section;
                offsets[i] = (int)position;
                position = Align(position + section);
            }

            if (position != length)
            {
                throw new InvalidDataException($"frame header describes {position} bytes, the message carries {length}");
            }

            return new Frame(ArrayPool<byte>.Shared, buffer, 0, length, offsets, lengths);
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>Adds a reference (a transport or a second reader); each reference is disposed once.</summary>
    public Frame Retain()
    {
        if (Interlocked.Increment(ref _references) <= 1)
        {
            throw new ObjectDisposedException(nameof(Frame), "a disposed frame cannot be retained");
        }

        return this;
    }

    public void Dispose()
    {
        int remaining = Interlocked.Decrement(ref _references);
        if (remaining == 0)
        {
            _pool.Return(_buffer);
        }
        else if (remaining < 0)
        {
            throw new ObjectDisposedException(nameof(Frame), "frame disposed more often than it was retained");
        }
    }

    private static int Align(long value) => checked((int)((value + 7) & ~7L));
}
