using System.IO.MemoryMappedFiles;

namespace LongCluster.Grains.Memory;

/// <summary>
/// One evicted block's K and V bytes (the same length each), in a managed array or in a read-only memory-mapped file
/// that is deleted when the block is disposed. The spans are valid until then.
/// </summary>
internal sealed unsafe class MemoryBlock : IDisposable
{
    private readonly MemoryTier _tier;
    private readonly long _extra;
    private readonly byte[]? _bytes;
    private readonly string? _path;
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _mapped;
    private readonly int _length;
    private bool _disposed;

    private MemoryBlock(MemoryTier tier, int length, long extra, byte[]? bytes, string? path, MemoryMappedFile? file, MemoryMappedViewAccessor? view, byte* mapped)
    {
        _tier = tier;
        _length = length;
        _extra = extra;
        _bytes = bytes;
        _path = path;
        _file = file;
        _view = view;
        _mapped = mapped;
    }

    public bool Spilled => _path is not null;

    public ReadOnlySpan<byte> Key => _bytes is not null ? _bytes.AsSpan(0, _length) : new ReadOnlySpan<byte>(_mapped, _length);

    public ReadOnlySpan<byte> Value => _bytes is not null ? _bytes.AsSpan(_length, _length) : new ReadOnlySpan<byte>(_mapped + _length, _length);

    public static MemoryBlock InMemory(MemoryTier tier, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, long extra)
    {
        CheckLengths(key, value);
        var bytes = new byte[key.Length * 2];
        key.CopyTo(bytes);
        value.CopyTo(bytes.AsSpan(key.Length));
        return new MemoryBlock(tier, key.Length, extra, bytes, null, null, null, null);
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
            return new MemoryBlock(tier, key.Length, extra, null, path, file, view, pointer + view.PointerOffset);
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
