using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace LongCluster.Grains.Memory;

/// <summary>
/// One evicted block's K and V bytes (the same length each), in native memory or in a read-only memory-mapped file
/// that is deleted when the block is disposed. The spans are valid until then. Native, not a managed array: a
/// million-token history is gigabytes of half-MiB blocks, which on the large-object heap would drive the silo's gen2
/// collections (and their pauses, which showed as the decode benchmark's p99).
/// </summary>
internal sealed unsafe class MemoryBlock : IDisposable
{
    private readonly MemoryTier _tier;
    private readonly long _extra;
    private readonly string? _path;
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _data;
    private readonly int _length;
    private bool _disposed;

    private MemoryBlock(MemoryTier tier, int length, long extra, string? path, MemoryMappedFile? file, MemoryMappedViewAccessor? view, byte* data)
    {
        _tier = tier;
        _length = length;
        _extra = extra;
        _path = path;
        _file = file;
        _view = view;
        _data = data;
    }

    public bool Spilled => _path is not null;

    public ReadOnlySpan<byte> Key => new(_data, _length);

    public ReadOnlySpan<byte> Value => new(_data + _length, _length);

    public static MemoryBlock InMemory(MemoryTier tier, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, long extra)
    {
        CheckLengths(key, value);
        byte* bytes = (byte*)NativeMemory.Alloc((nuint)key.Length * 2);
        key.CopyTo(new Span<byte>(bytes, key.Length));
        value.CopyTo(new Span<byte>(bytes + key.Length, value.Length));
        return new MemoryBlock(tier, key.Length, extra, null, null, null, bytes);
    }

    public static MemoryBlock Spill(MemoryTier tier, string path, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, long extra)
    {
        CheckLengths(key, value);
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None))
        {
            stream.Write(key);
            stream.Write(value);
        }

        MemoryMappedFile? file = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            file = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            return new MemoryBlock(tier, key.Length, extra, path, file, view, pointer + view.PointerOffset);
        }
        catch
        {
            view?.Dispose();
            file?.Dispose();
            File.Delete(path);
            throw;
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file!.Dispose();
            File.Delete(_path!);
        }
        else
        {
            NativeMemory.Free(_data);
        }

        _tier.Released(2L * _length, _extra, Spilled);
    }

    private static void CheckLengths(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        if (key.Length != value.Length)
        {
            throw new ArgumentException($"a block's K and V have the same length, got {key.Length} and {value.Length} bytes", nameof(value));
        }
    }
}
