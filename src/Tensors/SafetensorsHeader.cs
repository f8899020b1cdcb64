using System.Buffers.Binary;
using System.Text.Json;

namespace LongCluster.Tensors;

/// <summary>
/// The safetensors header, parsed and validated the same way whatever the tensors are read from (a file, a buffer,
/// a request or response body read front to back): size, JSON, dtypes, byte counts, bounds and overlaps.
/// </summary>
internal static class SafetensorsHeader
{
    /// <summary>
    /// The JSON header's length from the 8-byte <paramref name="prefix"/>, checked against the limit and against
    /// <paramref name="length"/>, the whole source's (<see cref="long.MaxValue"/> when a stream does not say).
    /// </summary>
    public static long Length(ReadOnlySpan<byte> prefix, long length, string source)
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("safetensors data is little-endian; this machine is not");
        }

        if (length < 8 || prefix.Length < 8)
        {
            throw new SafetensorsException($"{source}: truncated: {Math.Min(length, prefix.Length)} bytes, but a safetensors file starts with an 8-byte header length");
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > SafetensorsReader.MaxHeaderBytes)
        {
            throw new SafetensorsException($"{source}: header length {headerLength} is over the limit of {SafetensorsReader.MaxHeaderBytes} bytes");
        }

        if ((long)headerLength > length - 8)
        {
            throw new SafetensorsException($"{source}: truncated: header says {headerLength} bytes of JSON, but only {length - 8} bytes follow");
        }

        return (long)headerLength;
    }

    /// <summary>Tensor entries and metadata of the JSON <paramref name="header"/>; every tensor must lie within <paramref name="dataLength"/> bytes.</summary>
    public static (IReadOnlyDictionary<string, SafetensorsEntry> Entries, IReadOnlyDictionary<string, string> Metadata) Parse(ReadOnlyMemory<byte> header, long dataLength, string source)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new SafetensorsException($"{source}: header is not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SafetensorsException($"{source}: header must be a JSON object, found {document.RootElement.ValueKind}");
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
                        throw new SafetensorsException($"{source}: '__metadata__' appears twice");
                    }

                    sawMetadata = true;
                    ParseMetadata(property.Value, metadata, source);
                    continue;
                }

                if (entries.ContainsKey(property.Name))
                {
                    throw new SafetensorsException($"{source}: tensor '{property.Name}' appears twice in the header");
                }

                entries.Add(property.Name, ParseEntry(property.Name, property.Value, dataLength, source));
            }

            CheckOverlaps(entries.Values, source);
            return (entries, metadata);
        }
    }

    private static void ParseMetadata(JsonElement element, Dictionary<string, string> metadata, string source)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsException($"{source}: '__metadata__' must be an object of strings");
        }

        foreach (JsonProperty item in element.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw new SafetensorsException($"{source}: metadata '{item.Name}' must be a string, found {item.Value.ValueKind}");
            }

            metadata[item.Name] = item.Value.GetString()!;
        }
    }

    private static SafetensorsEntry ParseEntry(string name, JsonElement element, long dataLength, string source)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': entry must be an object with dtype, shape and data_offsets");
        }

        if (!element.TryGetProperty("dtype", out JsonElement dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': missing string 'dtype'");
        }

        string dtypeName = dtypeElement.GetString()!;
        if (!DTypes.TryParseSafetensors(dtypeName, out DType dtype))
        {
            throw new SafetensorsException($"{source}: tensor '{name}': dtype '{dtypeName}' is not supported (F32, F16, BF16, I32, I64)");
        }

        if (!element.TryGetProperty("shape", out JsonElement shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': missing array 'shape'");
        }

        var shape = new List<long>();
        foreach (JsonElement dimension in shapeElement.EnumerateArray())
        {
            if (dimension.ValueKind != JsonValueKind.Number || !dimension.TryGetInt64(out long value) || value < 0)
            {
                throw new SafetensorsException($"{source}: tensor '{name}': shape entries must be non-negative integers, found {dimension.GetRawText()}");
            }

            shape.Add(value);
        }

        if (!element.TryGetProperty("data_offsets", out JsonElement offsetsElement)
            || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': missing 'data_offsets' [begin, end]");
        }

        long begin = ReadOffset(name, offsetsElement[0], source);
        long end = ReadOffset(name, offsetsElement[1], source);
        if (end < begin)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': data_offsets [{begin}, {end}] end before they begin");
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
            throw new SafetensorsException($"{source}: tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
        }

        if (end - begin != bytes)
        {
            throw new SafetensorsException(
                $"{source}: tensor '{name}': {dtypeName} shape [{string.Join(", ", shape)}] needs {bytes} bytes, data_offsets [{begin}, {end}] span {end - begin}");
        }

        if (end > dataLength)
        {
            throw new SafetensorsException(
                $"{source}: tensor '{name}': data_offsets [{begin}, {end}] run past the end of the data ({dataLength} bytes; file truncated?)");
        }

        return new SafetensorsEntry(name, dtype, shape, begin, end);
    }

    private static long ReadOffset(string name, JsonElement element, string source)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long value) || value < 0)
        {
            throw new SafetensorsException($"{source}: tensor '{name}': data_offsets must be non-negative integers, found {element.GetRawText()}");
        }

        return value;
    }

    private static void CheckOverlaps(IEnumerable<SafetensorsEntry> entries, string source)
    {
        SafetensorsEntry? previous = null;
        foreach (SafetensorsEntry entry in entries.Where(e => e.ByteLength > 0).OrderBy(e => e.Begin))
        {
            if (previous is not null && entry.Begin < previous.End)
            {
                throw new SafetensorsException(
                    $"{source}: tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{entry.Name}' [{entry.Begin}, {entry.End}) overlap");
            }

            previous = entry;
        }
    }
}
