namespace LongCluster.Testing;

/// <summary>
/// A body as a socket hands it over: forward only, no length, no seeking, at most <paramref name="piece"/> bytes per
/// read; at byte <paramref name="breakAt"/> (when it lies inside the body) a read fails as a reset connection would.
/// Compiled into each test project that reads bodies (linked, not referenced).
/// </summary>
internal sealed class PiecewiseStream(byte[] bytes, int piece, int breakAt = int.MaxValue) : Stream
{
    private int _position;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_position == breakAt && breakAt < bytes.Length)
        {
            throw new IOException("Connection reset by peer");
        }

        int n = Math.Min(Math.Min(piece, buffer.Length), Math.Min(breakAt, bytes.Length) - _position);
        bytes.AsSpan(_position, n).CopyTo(buffer);
        _position += n;
        return n;
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.FromResult(Read(buffer.Span));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => Task.FromResult(Read(buffer, offset, count));

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
