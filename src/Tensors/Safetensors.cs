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

        var data = new byte[entry.ByteLength];
        ReadExactly(_dataStart + entry.Begin, data);
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
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is not");
        }

        if (length < 8)
        {
            throw new SafetensorsException($"{Source}: truncated: {length} bytes, but a safetensors file starts with an 8-byte header length");
        }

        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(0, prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderBytes)
        {
            throw new SafetensorsException($"{Source}: header length {headerLength} is over the limit of {MaxHeaderBytes} bytes");
        }

        if ((long)headerLength > length - 8)
        {
            throw new SafetensorsException($"{Source}: truncated: header says {headerLength} bytes of JSON, but only {length - 8} bytes follow");
        }

        var header = new byte[headerLength];
        ReadExactly(8, header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = length - dataStart;

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsException($"{Source}: header is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsException($"{Source}: header must be a JSON object, found {document.RootElement.ValueKind}");
            }

            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (JsonProperty property in document.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (sawMetadata)
                    {
                        throw new SafetensorsException($"{Source}: '__metadata__' appears twice");
                    }

                    sawMetadata = true;
                    ParseMetadata(property.Value, metadata);
                    continue;
                }

                if (entries.ContainsKey(property.Name))
                {
                    throw new SafetensorsException($"{Source}: tensor '{property.Name}' appears twice in the header");
                }

                entries.Add(property.Name, ParseEntry(property.Name, property.Value, dataLength));
            }

            CheckOverlaps(entries.Values);
            return (entries, metadata, dataStart);
        }
    }

    private void ParseMetadata(JsonElement element, Dictionary<string, string> metadata)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsException($"{Source}: '__metadata__' must be an object of strings");
        }

        foreach (JsonProperty item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsException($"{Source}: metadata '{item.Name}' must be a string, found {item.Value.ValueKind}");
            }

            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private SafetensorsEntry ParseEntry(string name, JsonElement element, long dataLength)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': entry must be an object with dtype, shape and data_offsets");
        }

        if (!element.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': missing string 'dtype'");
        }

        string dtypeName = dtypeElement.GetString()!;
        if (!DTypes.TryParseSafetensors(dtypeName, out DType dtype))
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': dtype '{dtypeName}' is not supported (F32, F16, BF16, I32, I64)");
        }

        if (!element.TryGetProperty("shape", out JsonElement shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': missing array 'shape'");
        }

        var shape = new List<long>();
        foreach (JsonElement dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long value) || value < 0)
            {
                throw new SafetensorsException($"{Source}: tensor '{name}': shape entries must be non-negative integers, found {dimension.GetRawText()}");
            }

            shape.Add(value);
        }

        if (!element.TryGetProperty("data_offsets", out JsonElement offsetsElement)
            || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': missing 'data_offsets' [begin, end]");
        }

        long begin = ReadOffset(name, offsetsElement[0]);
        long end = ReadOffset(name, offsetsElement[1]);
        if (end < begin)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': data_offsets [{begin}, {end}] end before they begin");
        }

        long elements;
        long bytes;
        try
        {
            elements = HostTensor.ElementCount(shape);
            bytes = checked(elements * dtype.Size());
        }
        catch (OverflowException)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        }

        if (end - begin != bytes)
        {
            throw new SafetensorsException(
                $"{Source}: tensor '{name}': {dtypeName} shape [{string.Join(", ", shape)}] needs {bytes} bytes, data_offsets [{begin}, {end}] span {end - begin}");
        }

        if (end > dataLength)
        {
            throw new SafetensorsException(
                $"{Source}: tensor '{name}': data_offsets [{begin}, {end}] run past the end of the data ({dataLength} bytes; file truncated?)");
        }

        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    private long ReadOffset(string name, JsonElement element)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long value) || value < 0)
        {
            throw new SafetensorsException($"{Source}: tensor '{name}': data_offsets must be non-negative integers, found {element.GetRawText()}");
        }

        return value;
    }

    private void CheckOverlaps(IEnumerable<SafetensorsEntry> entries)
    {
        SafetensorsEntry? previous = null;
        foreach (SafetensorsEntry entry in entries.Where(e => e.ByteLength > 0).OrderBy(e => e.Begin))
        {
            if (previous is not null && entry.Begin < previous.End)
            {
                throw new SafetensorsException(
                    $"{Source}: tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{entry.Name}' [{entry.Begin}, {entry.End}) overlap");
            }

            previous = entry;
        }
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

    /// <summary>The file's bytes in one exactly-sized array (request and response bodies): each tensor is copied once.</summary>
    public static byte[] ToBytes(IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        List<KeyValuePair<string, HostTensor>> list = [.. tensors];
        long size = 8 + Header(list, metadata).Length + list.Sum(t => t.Value.Data.LongLength);
        if (size > Array.MaxLength)
        {
            throw new ArgumentException($"{size} bytes of safetensors do not fit in one array", nameof(tensors));
        }

        byte[] bytes = GC.AllocateUninitializedArray<byte>((int)size);
        using var stream = new MemoryStream(bytes, writable: true);
        Write(stream, list, metadata);
        return bytes;
    }

    public static void Write(Stream stream, IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        List<KeyValuePair<string, HostTensor>> list = tensors.ToList();
        byte[] header = Header(list, metadata);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        foreach ((_, HostTensor tensor) in list)
        {
            stream.Write(tensor.Data);
        }
    }

    /// <summary>The JSON header, padded with spaces to a multiple of 8 bytes.</summary>
    private static byte[] Header(List<KeyValuePair<string, HostTensor>> list, IReadOnlyDictionary<string, string>? metadata)
    {
        using var headerStream = new MemoryStream();
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
            foreach ((string name, HostTensor tensor) in list)
            {
                if (name == "__metadata__" || !names.Add(name))
                {
                    throw new ArgumentException($"tensor name '{name}' is reserved or repeated", "tensors");
                }

                json.WriteStartObject(name);
                json.WriteString("dtype", tensor.DType.SafetensorsName());
                json.WriteStartArray("shape");
                foreach (long dimension in tensor.Shape)
                {
                    json.WriteNumberValue(dimension);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += tensor.Data.LongLength;
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

        return headerStream.ToArray();
    }
}
