using System.Net;
using System.Net.Sockets;

namespace LongCluster.Runtime.Transport;

/// <summary>
/// The silo-to-silo listener: raw TCP on its own accept loop. Every connection must pass the handshake within
/// <see cref="TransportOptions.HandshakeTimeout"/>; a connection that fails it, or later sends a malformed frame,
/// is closed and counted, and the listener keeps serving.
/// </summary>
/// <remarks>
/// Chosen by measurement (<c>longcluster bench transport [--protocol tcp|http2]</c>, two processes on loopback,
/// 16 MiB frames, on the 2-core build machine): this listener 2.2–2.3 GB/s; a Kestrel connection handler with the
/// same framing 0.48 GB/s, because Kestrel's socket transport receives into 4 KiB pool blocks, one receive call each;
/// HTTP/2 (h2c) request bodies to Kestrel 0.28–0.42 GB/s. Raw loopback is about 3.9 GB/s here. Reading each
/// payload straight into its buffer with large receives is what makes the difference; the client API stays on
/// Kestrel.
/// </remarks>
public sealed class TransportServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly TransportOptions _options;
    private readonly RequestHandler _handler;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _connections = [];
    private readonly Task _accepting;
    private long _accepted;
    private long _refused;

    private TransportServer(TcpListener listener, TransportOptions options, RequestHandler handler)
    {
        _listener = listener;
        _options = options;
        _handler = handler;
        _accepting = AcceptLoopAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Connections that completed the handshake.</summary>
    public long Accepted => Interlocked.Read(ref _accepted);

    /// <summary>Connections closed for a failed handshake or a malformed frame.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    public static Task<TransportServer> StartAsync(IPEndPoint endpoint, TransportOptions options, RequestHandler handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        cancellationToken.ThrowIfCancellationRequested();
        var listener = new TcpListener(endpoint);
        listener.Start(backlog: 512);
        return Task.FromResult(new TransportServer(listener, options, handler));
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        await _accepting.ConfigureAwait(false);
        Task[] connections;
        lock (_connections)
        {
            connections = [.. _connections];
        }

        await Task.WhenAll(connections).ConfigureAwait(false);
        _stopping.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stopping.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            socket.NoDelay = true;
            Task connection = ServeAsync(socket);
            lock (_connections)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(connection);
            }
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        await Task.Yield();
        var stream = new NetworkStream(socket, ownsSocket: true);
        PeerConnection? peer = null;
        try
        {
            peer = await PeerConnection.AcceptAsync(stream, stream, _options, _handler, _stopping.Token).ConfigureAwait(false);
            Interlocked.Increment(ref _accepted);
            using CancellationTokenRegistration stop = _stopping.Token.Register(() => stream.Dispose());
            await peer.Completion.ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or OperationCanceledException or ObjectDisposedException)
        {
            Interlocked.Increment(ref _refused);
        }
        finally
        {
            if (peer is not null)
            {
                await peer.DisposeAsync().ConfigureAwait(false);
            }

            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }
}
