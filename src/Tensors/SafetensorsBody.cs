namespace LongCluster.Tensors;

/// <summary>
/// Safetensors ready to be written to a stream (a response body): the preamble (<see cref="SafetensorsWriter.Preamble"/>),
/// built once, then each tensor's bytes from its own array. Made by <see cref="SafetensorsWriter.Body"/>.
/// </summary>
public sealed class SafetensorsBody
{
    private readonly byte[] _preamble;
    private readonly ReadOnlyMemory<byte>[] _data;

    internal SafetensorsBody(byte[] preamble, ReadOnlyMemory<byte>[] data)
    {
        _preamble = preamble;
        _data = data;
        Length = preamble.Length + data.Sum(d => (long)d.Length);
    }

    /// <summary>Bytes <see cref="WriteAsync"/> writes (a response's <c>Content-Length</c>).</summary>
    public long Length { get; }

    public async Task WriteAsync(Stream stream, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        await stream.WriteAsync(_preamble, cancellationToken).ConfigureAwait(false);
        foreach (ReadOnlyMemory<byte> data in _data)
        {
            await stream.WriteAsync(data, cancellationToken).ConfigureAwait(false);
        }
    }
}
