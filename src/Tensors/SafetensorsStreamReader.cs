namespace LongCluster.Tensors;

/// <summary>
/// Reads safetensors front to back from a stream that cannot seek (a request or response body), so the tensors'
/// bytes go from the socket straight to where they are kept, not through a buffer holding the whole body. The header
/// is read and validated as <see cref="SafetensorsReader"/> does when the reader opens; the data is then read
/// forward only, in the order of its offsets, skipping any gap between tensors.
/// </summary>
public sealed class SafetensorsStreamReader
{
    private readonly Stream _stream;
    private long _position;

    private SafetensorsStreamReader(Stream stream, IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata, string source)
    {
        _stream = stream;
        Entries = entries;
        Metadata = metadata;
        Source = source;
    }

    /// <summary>Where the tensors come from ("body", say), for error messages.</summary>
    public string Source { get; }

    /// <summary>Tensor entries by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The free-form string metadata of the header (empty if absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>
    /// Reads and validates the header. <paramref name="length"/> is the whole stream's when known (a body's
    /// <c>Content-Length</c>): tensors past it are refused here rather than found missing later.
    /// </summary>
    public static async Task<SafetensorsStreamReader> OpenAsync(Stream stream, long? length, string source = "body", CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        long total = length ?? long.MaxValue;
        var prefix = new byte[8];
        int read = await stream.ReadAtLeastAsync(prefix, prefix.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        long headerLength = SafetensorsHeader.Length(prefix.AsSpan(0, read), read < prefix.Length ? read : total, source);
        var header = new byte[headerLength];
        if (await stream.ReadAtLeastAsync(header, header.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false) < header.Length)
        {
            throw new SafetensorsException($"{source}: truncated: the stream ended inside the {headerLength}-byte header");
        }

        (IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata) =
            SafetensorsHeader.Parse(header, total == long.MaxValue ? long.MaxValue : total - 8 - headerLength, source);
        return new SafetensorsStreamReader(stream, entries, metadata, source);
    }

    /// <summary>The entries in the order their bytes come.</summary>
    public IEnumerable<SafetensorsEntry> InDataOrder() => Entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End);

    /// <summary>
    /// Reads the data bytes at <paramref name="offset"/> (from the start of the data section) into
    /// <paramref name="destination"/>, skipping what lies between the last read and <paramref name="offset"/>, which
    /// may not lie behind it. Reading nothing (an empty tensor's bytes) reads nothing wherever it is.
    /// </summary>
    public async ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default)
    {
        if (destination.IsEmpty)
        {
            return;
        }

        if (offset < _position)
        {
            throw new InvalidOperationException($"{Source}: data is read forward only: byte {offset} asked for after byte {_position}");
        }

        if (offset > _position)
        {
            await SkipAsync(offset - _position, cancellationToken).ConfigureAwait(false);
        }

        int read = await _stream.ReadAtLeastAsync(destination, destination.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        _position += read;
        if (read < destination.Length)
        {
            throw new SafetensorsException($"{Source}: truncated: the data ended at byte {_position}, {destination.Length - read} bytes short of byte {offset + destination.Length}");
        }
    }

    /// <summary>Every tensor, each read straight into an array of its own.</summary>
    public async Task<Dictionary<string, HostTensor>> ReadAllAsync(CancellationToken cancellationToken = default)
    {
        var tensors = new Dictionary<string, HostTensor>(StringComparer.Ordinal);
        foreach (SafetensorsEntry entry in InDataOrder())
        {
            if (entry.ByteLength > Array.MaxLength)
            {
                throw new SafetensorsException($"{Source}: tensor '{entry.Name}' is {entry.ByteLength} bytes, more than one buffer can hold");
            }

            // A whole array, not a line-aligned slice of one: the service hands these bytes on to grains as arrays
            // (HostTensor.DataArray), and a slice would have to be copied.
            byte[] data = HugePages.Allocate<byte>((int)entry.ByteLength);
            await ReadAsync(entry.Begin, data, cancellationToken).ConfigureAwait(false);
            tensors.Add(entry.Name, new HostTensor(entry.DType, entry.Shape, data));
        }

        return tensors;
    }

    private async Task SkipAsync(long count, CancellationToken cancellationToken)
    {
        var scratch = new byte[(int)Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            int read = await _stream.ReadAsync(scratch.AsMemory(0, (int)Math.Min(count, scratch.Length)), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                throw new SafetensorsException($"{Source}: truncated: the data ended at byte {_position}, inside a gap between tensors");
            }

            count -= read;
            _position += read;
        }
    }
}
