using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;

namespace LongCluster.Runtime.Redis;

/// <summary>
/// A small RESP2 client for the few commands membership needs (StackExchange.Redis does not restore here). One
/// connection, one command in flight at a time (callers are serialized), TLS and AUTH optional. Every command has
/// a deadline; a connection that failed or timed out is dropped, and the next command connects afresh — so a
/// restarted server is picked up without the caller doing anything.
/// </summary>
public sealed class RedisConnection : IAsyncDisposable
{
    /// <summary>Largest bulk reply accepted (Redis' own limit for a string).</summary>
    private const int MaxBulkBytes = 512 * 1024 * 1024;

    private const int MaxArrayItems = 1 << 24;

    private readonly RedisOptions _options;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private TcpClient? _tcp;
    private Stream? _stream;
    private RespReader? _reader;

    public RedisConnection(RedisOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
    }

    private string Endpoint => $"redis {_options.Host}:{_options.Port}";

    /// <summary>Sends one command and returns its reply. Error replies are returned, not thrown (see <see cref="RespValue.AsString"/>).</summary>
    /// <exception cref="RedisException">The connection failed or broke; the next call reconnects.</exception>
    /// <exception cref="TimeoutException">No reply within <see cref="RedisOptions.CommandTimeout"/>.</exception>
    public async Task<RespValue> ExecuteAsync(IReadOnlyList<string> arguments, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        if (arguments.Count == 0)
        {
            throw new ArgumentException("a command needs at least its name", nameof(arguments));
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(_options.CommandTimeout);
            try
            {
                if (_stream is null)
                {
                    await ConnectAsync(deadline.Token).ConfigureAwait(false);
                }

                await WriteAsync(_stream!, arguments, deadline.Token).ConfigureAwait(false);
                return await _reader!.ReadAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or AuthenticationException or OperationCanceledException or RedisException)
            {
                // The reply stream may be half read: never reuse this connection.
                Drop();
                if (e is OperationCanceledException)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    throw new TimeoutException($"{Endpoint}: {arguments[0]} got no reply within {_options.CommandTimeout.TotalSeconds:0.###} s");
                }

                throw e is RedisException ? e : new RedisException($"{Endpoint}: {e.Message}", e);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    public Task<RespValue> ExecuteAsync(params string[] arguments) => ExecuteAsync(arguments, CancellationToken.None);

    public ValueTask DisposeAsync()
    {
        Drop();
        _gate.Dispose();
        return ValueTask.CompletedTask;
    }

    private async Task ConnectAsync(CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(_options.ConnectTimeout);
        var tcp = new TcpClient { NoDelay = true };
        try
        {
            await tcp.ConnectAsync(_options.Host, _options.Port, deadline.Token).ConfigureAwait(false);
            Stream stream = tcp.GetStream();
            if (_options.UseTls)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                await tls.AuthenticateAsClientAsync(
                    new SslClientAuthenticationOptions
                    {
                        TargetHost = _options.TlsServerName ?? _options.Host,
                        RemoteCertificateValidationCallback = _options.ServerCertificateValidation,
                    },
                    deadline.Token).ConfigureAwait(false);
                stream = tls;
            }

            _tcp = tcp;
            _stream = stream;
            _reader = new RespReader(stream);
            if (_options.Password is not null)
            {
                string[] auth = _options.User is null ? ["AUTH", _options.Password] : ["AUTH", _options.User, _options.Password];
                await WriteAsync(stream, auth, deadline.Token).ConfigureAwait(false);
                RespValue reply = await _reader.ReadAsync(deadline.Token).ConfigureAwait(false);
                if (reply.Kind == RespKind.Error)
                {
                    throw new RedisException($"{Endpoint}: AUTH refused: {reply.Text}");
                }
            }
        }
        catch
        {
            tcp.Dispose();
            _tcp = null;
            _stream = null;
            _reader = null;
            throw;
        }
    }

    private void Drop()
    {
        _stream?.Dispose();
        _tcp?.Dispose();
        _stream = null;
        _tcp = null;
        _reader = null;
    }

    private static async Task WriteAsync(Stream stream, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var builder = new StringBuilder();
        builder.Append('*').Append(arguments.Count.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
        foreach (string argument in arguments)
        {
            builder.Append('$').Append(Encoding.UTF8.GetByteCount(argument).ToString(CultureInfo.InvariantCulture)).Append("\r\n");
            builder.Append(argument).Append("\r\n");
        }

        byte[] bytes = Encoding.UTF8.GetBytes(builder.ToString());
        await stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Parses RESP2 replies from a stream, with bounds on lengths so a garbled stream fails instead of allocating wildly.</summary>
    internal sealed class RespReader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start;
        private int _end;

        public async Task<RespValue> ReadAsync(CancellationToken cancellationToken)
        {
            string line = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
            if (line.Length == 0)
            {
                throw new RedisException("empty reply line");
            }

            string body = line[1..];
            switch (line[0])
            {
                case '+':
                    return new RespValue(RespKind.SimpleString, body);
                case '-':
                    return new RespValue(RespKind.Error, body);
                case ':':
                    return new RespValue(RespKind.Integer, Integer: ParseInteger(body));
                case '$':
                {
                    long length = ParseInteger(body);
                    if (length == -1)
                    {
                        return RespValue.NullValue;
                    }

                    if (length < 0 || length > MaxBulkBytes)
                    {
                        throw new RedisException($"bulk length {length} out of range");
                    }

                    byte[] data = new byte[length + 2];
                    await ReadExactlyAsync(data, cancellationToken).ConfigureAwait(false);
                    if (data[^2] != '\r' || data[^1] != '\n')
                    {
                        throw new RedisException("bulk string not terminated by CRLF");
                    }

                    return new RespValue(RespKind.BulkString, Encoding.UTF8.GetString(data, 0, (int)length));
                }

                case '*':
                {
                    long count = ParseInteger(body);
                    if (count == -1)
                    {
                        return RespValue.NullValue;
                    }

                    if (count < 0 || count > MaxArrayItems)
                    {
                        throw new RedisException($"array length {count} out of range");
                    }

                    var items = new RespValue[count];
                    for (long i = 0; i < count; i++)
                    {
                        items[i] = await ReadAsync(cancellationToken).ConfigureAwait(false);
                    }

                    return new RespValue(RespKind.Array, Items: items);
                }

                default:
                    throw new RedisException($"unknown reply type '{line[0]}'");
            }
        }

        private static long ParseInteger(string text) =>
            long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value)
                ? value
                : throw new RedisException($"'{text}' is not an integer");

        private async Task<string> ReadLineAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                int newline = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (newline > _start && _buffer[newline - 1] == '\r')
                {
                    string line = Encoding.UTF8.GetString(_buffer, _start, newline - 1 - _start);
                    _start = newline + 1;
                    return line;
                }

                if (_start > 0)
                {
                    Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
                    _end -= _start;
                    _start = 0;
                }

                if (_end == _buffer.Length)
                {
                    throw new RedisException($"reply line longer than {_buffer.Length} bytes");
                }

                int read = await stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new IOException("connection closed by the server");
                }

                _end += read;
            }
        }

        private async Task ReadExactlyAsync(byte[] destination, CancellationToken cancellationToken)
        {
            int buffered = Math.Min(_end - _start, destination.Length);
            Array.Copy(_buffer, _start, destination, 0, buffered);
            _start += buffered;
            if (buffered < destination.Length)
            {
                await stream.ReadExactlyAsync(destination.AsMemory(buffered), cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
