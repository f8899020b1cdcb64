using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace LongCluster.Runtime.Transport;

/// <summary>Answers a request frame. The payload memory is only valid until the returned task completes.</summary>
public delegate ValueTask<byte[]> RequestHandler(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken);

/// <summary>A request the peer answered with a failure frame (its handler threw); carries the remote exception's type name and message.</summary>
public sealed class RemoteException(string remoteType, string message) : Exception($"{remoteType}: {message}")
{
    /// <summary>Name of the exception type thrown on the peer (e.g. <c>ArgumentException</c>).</summary>
    public string RemoteType { get; } = remoteType;

    /// <summary>The peer's exception message alone.</summary>
    public string RemoteMessage { get; } = message;

    /// <summary>
    /// How a failure travels: <c>"Type: message"</c>. A <see cref="RemoteException"/> passed on from a further hop
    /// keeps the type it was first thrown as, so a caller two silos away classifies it as the caller one silo away
    /// would.
    /// </summary>
    internal static string Describe(Exception e) => e is RemoteException remote ? remote.Message : $"{e.GetType().Name}: {e.Message}";

    internal static RemoteException Parse(string text)
    {
        int colon = text.IndexOf(": ", StringComparison.Ordinal);
        return colon > 0 ? new RemoteException(text[..colon], text[(colon + 2)..]) : new RemoteException("Exception", text);
    }
}

/// <summary>
/// One persistent silo-to-silo connection after a mutual handshake: requests and one-way messages in both
/// directions, many in flight, correlated by id. Payloads are read into pooled buffers and written straight from
/// the caller's memory after a 24-byte header. Any malformed frame closes the connection: a peer that sends
/// garbage loses its connection, never the silo.
/// </summary>
public sealed class PeerConnection : IAsyncDisposable
{
    private const int NonceBytes = 32;

    private readonly Stream _input;
    private readonly Stream _output;
    private readonly IDisposable? _owner;
    private readonly TransportOptions _options;
    private readonly RequestHandler _handler;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<byte[]>> _pending = new();
    private readonly CancellationTokenSource _closed = new();
    private long _nextCorrelation;
    private Task _reading = Task.CompletedTask;

    private PeerConnection(Stream input, Stream output, IDisposable? owner, TransportOptions options, RequestHandler handler)
    {
        _input = input;
        _output = output;
        _owner = owner;
        _options = options;
        _handler = handler;
    }

    /// <summary>Completes when the connection is closed by either side; faults with <see cref="InvalidDataException"/> on a protocol error.</summary>
    public Task Completion => _reading;

    /// <summary>Connects to a silo and proves membership of the same cluster (both ways) before anything else.</summary>
    public static async Task<PeerConnection> ConnectAsync(string host, int port, TransportOptions options, RequestHandler? handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(options.HandshakeTimeout);
            await tcp.ConnectAsync(host, port, deadline.Token).ConfigureAwait(false);
            NetworkStream stream = tcp.GetStream();
            var peer = new PeerConnection(stream, stream, tcp, options, handler ?? RefuseRequests);
            await peer.ClientHandshakeAsync(deadline.Token).ConfigureAwait(false);
            peer.StartReading();
            return peer;
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>The server side of a new connection: runs the handshake; throws (and the caller drops the connection) if the peer fails it.</summary>
    internal static async Task<PeerConnection> AcceptAsync(Stream input, Stream output, TransportOptions options, RequestHandler handler, CancellationToken cancellationToken)
    {
        var peer = new PeerConnection(input, output, null, options, handler);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(options.HandshakeTimeout);
        await peer.ServerHandshakeAsync(deadline.Token).ConfigureAwait(false);
        peer.StartReading();
        return peer;
    }

    /// <summary>
    /// Sends a request and returns the peer's answer; <see cref="RemoteException"/> if its handler failed.
    /// <paramref name="timeout"/> replaces <see cref="TransportOptions.RequestTimeout"/> for calls known to run long.
    /// </summary>
    public async Task<byte[]> RequestAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default, TimeSpan? timeout = null)
    {
        TimeSpan limit = timeout ?? _options.RequestTimeout;
        ulong id = (ulong)Interlocked.Increment(ref _nextCorrelation);
        var answer = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = answer;
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closed.Token);
            deadline.CancelAfter(limit);
            await WriteAsync(new FrameHeader(FrameKind.Request, id, payload.Length), payload, deadline.Token).ConfigureAwait(false);
            try
            {
                return await answer.Task.WaitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw _closed.IsCancellationRequested
                    ? new IOException("connection closed before the answer arrived")
                    : new TimeoutException($"no answer within {limit.TotalSeconds:0.###} s");
            }
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Sends a message that gets no answer.</summary>
    public Task SendOneWayAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default) =>
        WriteAsync(new FrameHeader(FrameKind.OneWay, 0, payload.Length), payload, cancellationToken);

    /// <summary>
    /// Sends one <see cref="FrameKind.Message"/> frame whose payload is <paramref name="head"/> followed by
    /// <paramref name="body"/>, written from the caller's memory (no copy); the peer's
    /// <see cref="TransportOptions.MessageHandler"/> reads it as one stream.
    /// </summary>
    public async Task SendMessageAsync(ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> body, CancellationToken cancellationToken = default)
    {
        using var closing = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closed.Token);
        try
        {
            await WriteAsync(new FrameHeader(FrameKind.Message, 0, head.Length + (long)body.Length), head, closing.Token, body).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new IOException("connection closed while sending a message");
        }
    }

    /// <summary>
    /// Sends <paramref name="length"/> bytes read from <paramref name="source"/> as one one-way frame, in chunks, so
    /// the sender never holds the payload whole either. The peer needs a <see cref="TransportOptions.StreamHandler"/>
    /// for frames over its <see cref="TransportOptions.MaxFrameBytes"/>.
    /// </summary>
    public async Task SendStreamAsync(Stream source, long length, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        byte[] chunk = ArrayPool<byte>.Shared.Rent(1024 * 1024);
        byte[] header = new byte[FrameHeader.Size];
        new FrameHeader(FrameKind.OneWay, 0, length).Write(header);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _output.WriteAsync(header, cancellationToken).ConfigureAwait(false);
            for (long sent = 0; sent < length;)
            {
                int read = await source.ReadAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, length - sent)), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new EndOfStreamException($"source ended after {sent} of {length} bytes; connection closed");
                }

                await _output.WriteAsync(chunk.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                sent += read;
            }

            await _output.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // The header promised the whole payload: after a short source, a failed read or a cancelled write the
            // connection cannot be resynchronised, so close it.
            Abort();
            throw;
        }
        finally
        {
            _writeLock.Release();
            ArrayPool<byte>.Shared.Return(chunk);
        }
    }

    /// <summary>Closes the connection under its users (the read loop ends, pending requests fail); the lock stays usable.</summary>
    private void Abort()
    {
        _closed.Cancel();
        _owner?.Dispose();
        _input.Dispose();
        _output.Dispose();
    }

    /// <summary>Writes raw bytes past the framing (tests send malformed frames after a real handshake).</summary>
    internal async Task SendRawAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _output.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
            await _output.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _closed.CancelAsync().ConfigureAwait(false);
        _owner?.Dispose();
        _input.Dispose();
        _output.Dispose();
        try
        {
            await _reading.ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ObjectDisposedException or OperationCanceledException)
        {
        }

        _writeLock.Dispose();
    }

    private static ValueTask<byte[]> RefuseRequests(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken) =>
        throw new InvalidOperationException("this endpoint takes no requests");

    private void StartReading() => _reading = ReadLoopAsync();

    private async Task ClientHandshakeAsync(CancellationToken cancellationToken)
    {
        byte[] clientNonce = RandomNumberGenerator.GetBytes(NonceBytes);
        byte[] cluster = Encoding.UTF8.GetBytes(_options.ClusterId);
        await WriteAsync(new FrameHeader(FrameKind.Hello, 0, cluster.Length + NonceBytes), (byte[])[.. cluster, .. clientNonce], cancellationToken).ConfigureAwait(false);
        byte[] challenge = await ReadHandshakeFrameAsync(FrameKind.Challenge, cancellationToken).ConfigureAwait(false);
        if (challenge.Length != NonceBytes + 32)
        {
            throw new InvalidDataException("malformed challenge");
        }

        byte[] serverNonce = challenge[..NonceBytes];
        if (!CryptographicOperations.FixedTimeEquals(challenge.AsSpan(NonceBytes), Mac("server", clientNonce, serverNonce)))
        {
            throw new InvalidDataException("the server could not prove it knows the cluster secret");
        }

        byte[] proof = Mac("client", serverNonce, clientNonce);
        await WriteAsync(new FrameHeader(FrameKind.Proof, 0, proof.Length), proof, cancellationToken).ConfigureAwait(false);
        byte[] accepted = await ReadHandshakeFrameAsync(FrameKind.Proof, cancellationToken).ConfigureAwait(false);
        if (accepted.Length != 0)
        {
            throw new InvalidDataException("malformed handshake completion");
        }
    }

    private async Task ServerHandshakeAsync(CancellationToken cancellationToken)
    {
        byte[] hello = await ReadHandshakeFrameAsync(FrameKind.Hello, cancellationToken).ConfigureAwait(false);
        byte[] cluster = Encoding.UTF8.GetBytes(_options.ClusterId);
        if (hello.Length != cluster.Length + NonceBytes || !hello.AsSpan(0, cluster.Length).SequenceEqual(cluster))
        {
            throw new InvalidDataException("peer is not of this cluster");
        }

        byte[] clientNonce = hello[cluster.Length..];
        byte[] serverNonce = RandomNumberGenerator.GetBytes(NonceBytes);
        byte[] challenge = [.. serverNonce, .. Mac("server", clientNonce, serverNonce)];
        await WriteAsync(new FrameHeader(FrameKind.Challenge, 0, challenge.Length), challenge, cancellationToken).ConfigureAwait(false);
        byte[] proof = await ReadHandshakeFrameAsync(FrameKind.Proof, cancellationToken).ConfigureAwait(false);
        if (!CryptographicOperations.FixedTimeEquals(proof, Mac("client", serverNonce, clientNonce)))
        {
            throw new InvalidDataException("peer could not prove it knows the cluster secret");
        }

        await WriteAsync(new FrameHeader(FrameKind.Proof, 0, 0), ReadOnlyMemory<byte>.Empty, cancellationToken).ConfigureAwait(false);
    }

    private byte[] Mac(string role, byte[] first, byte[] second) =>
        HMACSHA256.HashData(_options.Secret, (byte[])[.. Encoding.UTF8.GetBytes(role), .. first, .. second, .. Encoding.UTF8.GetBytes(_options.ClusterId)]);

    private async Task<byte[]> ReadHandshakeFrameAsync(FrameKind expected, CancellationToken cancellationToken)
    {
        var header = new byte[FrameHeader.Size];
        await _input.ReadExactlyAsync(header, cancellationToken).ConfigureAwait(false);
        FrameHeader parsed = FrameHeader.Read(header, 4096);
        if (parsed.Kind != expected)
        {
            throw new InvalidDataException($"expected a {expected} frame during the handshake, got {parsed.Kind}");
        }

        var payload = new byte[parsed.PayloadLength];
        await _input.ReadExactlyAsync(payload, cancellationToken).ConfigureAwait(false);
        return payload;
    }

    private async Task ReadLoopAsync()
    {
        var header = new byte[FrameHeader.Size];
        byte[] oneWay = [];
        try
        {
            while (true)
            {
                int first = await _input.ReadAsync(header.AsMemory(0, 1), _closed.Token).ConfigureAwait(false);
                if (first == 0)
                {
                    return;
                }

                await _input.ReadExactlyAsync(header.AsMemory(1), _closed.Token).ConfigureAwait(false);
                FrameHeader frame = FrameHeader.Read(
                    header, _options.StreamHandler is null && _options.MessageHandler is null ? _options.MaxFrameBytes : _options.MaxStreamedFrameBytes);
                if (frame.Kind == FrameKind.Message)
                {
                    StreamHandler messages = _options.MessageHandler ?? throw new InvalidDataException("this endpoint takes no message frames");
                    var body = new PayloadStream(_input, frame.PayloadLength);
                    await messages(body, frame.PayloadLength, _closed.Token).ConfigureAwait(false);
                    await body.SkipRestAsync(_closed.Token).ConfigureAwait(false);
                    continue;
                }

                if (frame.Kind == FrameKind.OneWay && _options.StreamHandler is { } streaming && frame.PayloadLength >= _options.StreamThresholdBytes)
                {
                    var body = new PayloadStream(_input, frame.PayloadLength);
                    await streaming(body, frame.PayloadLength, _closed.Token).ConfigureAwait(false);
                    await body.SkipRestAsync(_closed.Token).ConfigureAwait(false);
                    continue;
                }

                if (frame.PayloadLength > _options.MaxFrameBytes)
                {
                    throw new InvalidDataException($"a {frame.Kind} frame of {frame.PayloadLength} bytes is over the {_options.MaxFrameBytes}-byte limit for buffered frames");
                }

                int length = (int)frame.PayloadLength;
                if (frame.Kind == FrameKind.OneWay)
                {
                    // One-way frames are handled before the next read, so one buffer per connection serves them all:
                    // no per-frame rent, and no page faults on fresh memory for every large frame.
                    if (oneWay.Length < length)
                    {
                        oneWay = GC.AllocateUninitializedArray<byte>(Math.Max(length, oneWay.Length * 2));
                    }

                    await _input.ReadExactlyAsync(oneWay.AsMemory(0, length), _closed.Token).ConfigureAwait(false);
                    await _handler(oneWay.AsMemory(0, length), _closed.Token).ConfigureAwait(false);
                    continue;
                }

                byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
                await _input.ReadExactlyAsync(buffer.AsMemory(0, length), _closed.Token).ConfigureAwait(false);
                switch (frame.Kind)
                {
                    case FrameKind.Request:
                        _ = AnswerAsync(frame.Correlation, buffer, length);
                        break;
                    case FrameKind.Response or FrameKind.Failure:
                        byte[] copy = buffer.AsSpan(0, length).ToArray();
                        ArrayPool<byte>.Shared.Return(buffer);
                        if (_pending.TryGetValue(frame.Correlation, out TaskCompletionSource<byte[]>? answer))
                        {
                            if (frame.Kind == FrameKind.Response)
                            {
                                answer.TrySetResult(copy);
                            }
                            else
                            {
                                answer.TrySetException(RemoteException.Parse(Encoding.UTF8.GetString(copy)));
                            }
                        }

                        break;
                    default:
                        ArrayPool<byte>.Shared.Return(buffer);
                        throw new InvalidDataException($"unexpected {frame.Kind} frame after the handshake");
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The peer went away (EOF, reset) or we closed: a normal end of the connection, not a protocol error.
        }
        finally
        {
            await _closed.CancelAsync().ConfigureAwait(false);
            foreach (TaskCompletionSource<byte[]> answer in _pending.Values)
            {
                answer.TrySetException(new IOException("connection closed before the answer arrived"));
            }
        }
    }

    private async Task AnswerAsync(ulong correlation, byte[] buffer, int length)
    {
        byte[] reply;
        FrameKind kind = FrameKind.Response;
        try
        {
            reply = await _handler(buffer.AsMemory(0, length), _closed.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            kind = FrameKind.Failure;
            reply = Encoding.UTF8.GetBytes(RemoteException.Describe(e));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        try
        {
            await WriteAsync(new FrameHeader(kind, correlation, reply.Length), reply, _closed.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
            // The connection went away; the caller's deadline reports it.
        }
    }

    /// <summary>Writes one frame: the header, then <paramref name="payload"/> and <paramref name="more"/> (the rest of the same payload).</summary>
    private async Task WriteAsync(FrameHeader header, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken, ReadOnlyMemory<byte> more = default)
    {
        byte[] bytes = ArrayPool<byte>.Shared.Rent(FrameHeader.Size);
        header.Write(bytes);
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        bool writing = false;
        try
        {
            // Nothing is written yet: a cancelled or closed connection fails the frame without touching the stream.
            cancellationToken.ThrowIfCancellationRequested();
            if (_closed.IsCancellationRequested)
            {
                throw new IOException("connection closed");
            }

            writing = true;
            await _output.WriteAsync(bytes.AsMemory(0, FrameHeader.Size), cancellationToken).ConfigureAwait(false);
            if (!payload.IsEmpty)
            {
                await _output.WriteAsync(payload, cancellationToken).ConfigureAwait(false);
            }

            if (!more.IsEmpty)
            {
                await _output.WriteAsync(more, cancellationToken).ConfigureAwait(false);
            }

            await _output.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (writing)
        {
            // Part of the frame may be on the wire (a deadline or abort cancelled the write): the peer could not
            // find the next frame's start, so the connection closes instead of going on out of step.
            Abort();
            if (e is ObjectDisposedException)
            {
                throw new IOException("connection closed while writing a frame", e);
            }

            throw;
        }
        finally
        {
            _writeLock.Release();
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }
}

/// <summary>A frame's payload as a read-only stream over the connection, ending after exactly its length.</summary>
internal sealed class PayloadStream(Stream inner, long length) : Stream
{
    private readonly long _length = length;
    private long _remaining = length;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => _length;

    public override long Position
    {
        get => _length - _remaining;
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_remaining == 0)
        {
            return 0;
        }

        int read = await inner.ReadAsync(buffer[..(int)Math.Min(buffer.Length, _remaining)], cancellationToken).ConfigureAwait(false);
        if (read == 0)
        {
            throw new EndOfStreamException($"connection closed with {_remaining} bytes of the frame still to come");
        }

        _remaining -= read;
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count, CancellationToken.None).GetAwaiter().GetResult();

    /// <summary>Reads and discards what the handler did not consume, so the next frame header lines up.</summary>
    public async Task SkipRestAsync(CancellationToken cancellationToken)
    {
        byte[] scratch = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            while (await ReadAsync(scratch, cancellationToken).ConfigureAwait(false) > 0)
            {
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
