using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace LongCluster.Tensors;

/// <summary>One tensor's entry in a safetensors header. Offsets are relative to the start of the data section.</summary>
public sealed record SafetensorsEntry(string Name, DType DType, IReadOnlyList<long> Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
}

/// <summary>
/// Reads safetensors: an 8-byte little-endian header length, a JSON header of
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}}</c>, then raw little-endian data.
/// The whole header is validated when the reader opens (size, JSON, dtypes, byte counts, bounds, overlaps), so a
/// later <see cref="Read(string)"/> never reads past the end of the source. Gaps between tensors are tolerated.
/// </summary>
public sealed class SafetensorsReader : IDisposable
{
    /// <summary>Largest accepted header, as in the reference implementation: a bigger one is an attack or an error.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly SafeFileHandle? _file;
    private readonly ReadOnlyMemory<byte> _memory;
    private readonly long _dataStart;

    private SafetensorsReader(SafeFileHandle? file, ReadOnlyMemory<byte> memory, long length, string source)
    {
        _file = file;
        _memory = memory;
        Source = source;
        try
        {
            (Entries, Metadata, _dataStart) = ParseHeader(length);
        }
        catch
        {
            _file?.Dispose();
            throw;
        }
    }

    /// <summary>Where the tensors come from (a path, or "body"), for error messages.</summary>
    public string Source { get; }

    /// <summary>Tensor entries by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The free-form string metadata of the header (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static SafetensorsReader Open(string path)
    {
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SafetensorsException($"{path}: cannot open: {e.Message}", e);
        }

        return new SafetensorsReader(handle, default, RandomAccess.GetLength(handle), path);
    }

    public static SafetensorsReader FromBytes(ReadOnlyMemory<byte> bytes, string source = "body") =>
        new(null, bytes, bytes.Length, source);

    public bool Contains(string name) => Entries.ContainsKey(name);

    /// <summary>Reads one tensor into a new <see cref="HostTensor"/>.</summary>
    public HostTensor Read(string name)
    {
        if (!Entries.TryGetValue(name, out SafetensorsEntry? entry))
        {
            throw new SafetensorsException($"{Source}: no tensor named '{name}' (have: {string.Join(", ", Entries.Keys.Order())})");
        }

        if (entry.ByteLength > Array.MaxLength)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}' is {entry.ByteLength} bytes, more than one buffer can hold");
        }

        Memory<byte> data = HugePages.AllocateAligned((int)entry.ByteLength);
        ReadExactly(_dataStart + entry.Begin, data.Span);
        return new HostTensor(entry.DType, entry.Shape, data);
    }

    /// <summary>
    /// Reads a tensor and checks it against what the caller expects: its dtype is one of <paramref name="dtypes"/>
    /// and it has <paramref name="rank"/> dimensions.
    /// </summary>
    public HostTensor Read(string name, int rank, params DType[] dtypes)
    {
        if (Entries.TryGetValue(name, out SafetensorsEntry? entry))
        {
            if (Array.IndexOf(dtypes, entry.DType) < 0)
            {
                throw new SafetensorsException(
                    $"{Source}: tensor '{name}' has dtype {entry.DType.SafetensorsName()}, expected {string.Join(" or ", dtypes.Select(d => d.SafetensorsName()))}");
            }

            if (entry.Shape.Count != rank)
            {
                throw new SafetensorsException(
                    $"{Source}: tensor '{name}' has shape [{string.Join(", ", entry.Shape)}] ({entry.Shape.Count} dimensions), expected {rank} dimensions");
            }
        }

        return Read(name);
    }

    public void Dispose() => _file?.Dispose();

    private void ReadExactly(long offset, Span<byte> destination)
    {
        if (_file is null)
        {
            _memory.Span.Slice(checked((int)offset), destination.Length).CopyTo(destination);
            return;
        }

        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_file, destination, offset);
            if (n <= 0)
            {
                throw new SafetensorsException($"{Source}: file ended at byte {offset} while reading (was it truncated while open?)");
            }

            destination = destination[n..];
            offset += n;
        }
    }

    private (IReadOnlyDictionary<string, SafetensorsEntry>, IReadOnlyDictionary<string, string>, long) ParseHeader(long length)
    {
        Span<byte> prefix = stackalloc byte[8];
        if (length >= 8)
        {
            ReadExactly(0, prefix);
        }

        long headerLength = SafetensorsHeader.Length(prefix, length, Source);
        var header = new byte[headerLength];
        ReadExactly(8, header);
        long dataStart = 8 + headerLength;
        (IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata) = SafetensorsHeader.Parse(header, length - dataStart, Source);
        return (entries, metadata, dataStart);
    }
}

/// <summary>Writes safetensors: tensors in the given order, header padded with spaces to 8 bytes.</summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        string temporary = path + ".tmp";
        using (FileStream stream = File.Create(temporary))
        {
            Write(stream, tensors, metadata);
        }

        // Rename so a reader never sees a half-written output file.
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>The file's bytes in one exactly-sized array: each tensor is copied once.</summary>
    public static byte[] ToBytes(IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        List<KeyValuePair<string, HostTensor>> list = [.. tensors];
        byte[] preamble = Preamble(Layout(list), metadata);
        long size = preamble.Length + list.Sum(t => (long)t.Value.Data.Length);
        if (size > Array.MaxLength)
        {
            throw new ArgumentException($"{size} bytes of safetensors do not fit in one array", nameof(tensors));
        }

        byte[] bytes = GC.AllocateUninitializedArray<byte>((int)size);
        using var stream = new MemoryStream(bytes, writable: true);
        Write(stream, preamble, list);
        return bytes;
    }

    public static void Write(Stream stream, IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        List<KeyValuePair<string, HostTensor>> list = [.. tensors];
        Write(stream, Preamble(Layout(list), metadata), list);
    }

    /// <summary>
    /// The tensors as a body to be written to a stream (a response) as they are, with no copy into one buffer first;
    /// its length is known before it is written.
    /// </summary>
    public static SafetensorsBody Body(IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        List<KeyValuePair<string, HostTensor>> list = [.. tensors];
        return new SafetensorsBody(Preamble(Layout(list), metadata), [.. list.Select(t => t.Value.Data)]);
    }

    /// <summary>
    /// What comes before the data: the 8-byte little-endian header length and the JSON header (padded with spaces to a
    /// multiple of 8 bytes), for <paramref name="tensors"/> whose bytes follow one after another in the given order.
    /// A writer that streams the data from elsewhere (a shard's rows out of a larger tensor) writes this first.
    /// </summary>
    public static byte[] Preamble(IReadOnlyList<SafetensorsLayout> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        using var headerStream = new MemoryStream();
        headerStream.Write(new byte[8]);
        using (var json = new Utf8JsonWriter(headerStream))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (KeyValuePair<string, string> item in metadata)
                {
                    json.WriteString(item.Key, item.Value);
                }

                json.WriteEndObject();
            }

            long offset = 0;
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach ((string name, DType dtype, IReadOnlyList<long> shape) in tensors)
            {
                if (name == "__metadata__" || !names.Add(name))
                {
                    throw new ArgumentException($"tensor name '{name}' is reserved or repeated", nameof(tensors));
                }

                json.WriteStartObject(name);
                json.WriteString("dtype", dtype.SafetensorsName());
                json.WriteStartArray("shape");
                foreach (long dimension in shape)
                {
                    json.WriteNumberValue(dimension);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += checked(HostTensor.ElementCount(shape) * dtype.Size());
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }

            json.WriteEndObject();
        }

        int padding = (int)((8 - (headerStream.Length % 8)) % 8);
        for (int i = 0; i < padding; i++)
        {
            headerStream.WriteByte((byte)' ');
        }

        byte[] preamble = headerStream.ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(preamble, (ulong)(preamble.Length - 8));
        return preamble;
    }

    private static List<SafetensorsLayout> Layout(List<KeyValuePair<string, HostTensor>> tensors) =>
        [.. tensors.Select(t => new SafetensorsLayout(t.Key, t.Value.DType, t.Value.Shape))];

    private static void Write(Stream stream, byte[] preamble, List<KeyValuePair<string, HostTensor>> tensors)
    {
        stream.Write(preamble);
        foreach ((_, HostTensor tensor) in tensors)
        {
            stream.Write(tensor.Data.Span);
        }
    }
}

/// <summary>A tensor as a safetensors header describes it: name, dtype and shape (its byte length follows from them).</summary>
public readonly record struct SafetensorsLayout(string Name, DType DType, IReadOnlyList<long> Shape);
