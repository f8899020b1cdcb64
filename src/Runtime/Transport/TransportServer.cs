using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LongCluster.Runtime.Transport;

/// <summary>
/// The silo-to-silo listener: raw TCP through a Kestrel connection handler (no HTTP on this port). Every
/// connection must pass the handshake within <see cref="TransportOptions.HandshakeTimeout"/>; a connection that
/// fails it, or later sends a malformed frame, is closed and counted, and the listener keeps serving.
/// </summary>
public sealed class TransportServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ListenOptions _listen;
    private readonly Counters _counters;

    private TransportServer(WebApplication app, ListenOptions listen, Counters counters)
    {
        _app = app;
        _listen = listen;
        _counters = counters;
    }

    public int Port => _listen.IPEndPoint!.Port;

    /// <summary>Connections that completed the handshake.</summary>
    public long Accepted => Interlocked.Read(ref _counters.Accepted);

    /// <summary>Connections closed for a failed handshake or a malformed frame.</summary>
    public long Refused => Interlocked.Read(ref _counters.Refused);

    public static async Task<TransportServer> StartAsync(IPEndPoint endpoint, TransportOptions options, RequestHandler handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        ListenOptions? listen = null;
        var counters = new Counters();
        builder.Services.AddSingleton(new Handler(counters, options, handler));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxConcurrentConnections = 10_000;
            kestrel.Listen(endpoint, l =>
            {
                listen = l;
                l.UseConnectionHandler<Handler>();
            });
        });
        WebApplication app = builder.Build();
        var server = new TransportServer(app, listen!, counters);
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        return server;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }

    private sealed class Counters
    {
        public long Accepted;
        public long Refused;
    }

    private sealed class Handler(Counters counters, TransportOptions options, RequestHandler handler) : ConnectionHandler
    {
        public override async Task OnConnectedAsync(ConnectionContext connection)
        {
            Stream input = connection.Transport.Input.AsStream();
            Stream output = connection.Transport.Output.AsStream();
            PeerConnection? peer = null;
            try
            {
                peer = await PeerConnection.AcceptAsync(input, output, options, handler, connection.ConnectionClosed).ConfigureAwait(false);
                Interlocked.Increment(ref counters.Accepted);
                await peer.Completion.ConfigureAwait(false);
            }
            catch (Exception e) when (e is InvalidDataException or IOException or OperationCanceledException or ObjectDisposedException)
            {
                Interlocked.Increment(ref counters.Refused);
            }
            finally
            {
                if (peer is not null)
                {
                    await peer.DisposeAsync().ConfigureAwait(false);
                }

                connection.Abort();
            }
        }
    }
}
