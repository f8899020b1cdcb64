using System.Net;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LongCluster.Runtime.Hosting;

/// <summary>
/// One silo: the silo-to-silo listener, membership (join, heartbeat, leave), the silo's grains, and an HTTP
/// endpoint with <c>/healthz</c> (the process is alive) and <c>/readyz</c> (joined the cluster, Active, and not
/// stopping). The same code runs one silo per process (<c>src/Silo</c>) or N in one process (tests). Grain calls
/// go through <see cref="GrainFactory"/>, which routes each grain to its owning silo.
/// </summary>
public sealed class Silo : IAsyncDisposable
{
    private readonly TransportServer _transport;
    private readonly MembershipAgent _membership;
    private readonly LocalGrainRuntime _grains;
    private readonly WebApplication _http;
    private readonly GrainRouter _router;
    private readonly CancellationTokenSource _closing = new();
    private Task _ownership = Task.CompletedTask;
    private Task _collection = Task.CompletedTask;
    private int _stopping;

    private Silo(TransportServer transport, MembershipAgent membership, LocalGrainRuntime grains, GrainRouter router, WebApplication http)
    {
        _transport = transport;
        _membership = membership;
        _grains = grains;
        _router = router;
        _http = http;
    }

    /// <summary>References to grains anywhere in the cluster.</summary>
    public IGrainFactory GrainFactory => _router;

    public GrainRouter Router => _router;

    public SiloAddress Address => _membership.Self;

    public int HttpPort { get; private set; }

    public MembershipAgent Membership => _membership;

    public LocalGrainRuntime Grains => _grains;

    /// <summary>Joined, Active in its own view, not declared dead, not stopping.</summary>
    public bool IsReady => Volatile.Read(ref _stopping) == 0 && !_membership.DeclaredDead && _membership.View.StatusOf(Address) == SiloStatus.Active;

    /// <summary>Context of this silo as the hosted services see it.</summary>
    public SiloContext Context { get; private set; } = null!;

    /// <summary>The silo's own service container (per silo, also when N silos share a process).</summary>
    public IServiceProvider Services => _http.Services;

    public static async Task<Silo> StartAsync(
        SiloOptions options,
        IMembershipTable table,
        GrainTypeRegistry grainTypes,
        TimeProvider? time = null,
        ILoggerFactory? logging = null,
        CancellationToken cancellationToken = default,
        IReadOnlyList<ISiloExtension>? extensions = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(grainTypes);
        options.Validate();
        time ??= TimeProvider.System;
        extensions ??= [];
        SiloContext? context = null;
        var transportOptions = new TransportOptions
        {
            ClusterId = options.ClusterId,
            Secret = options.SecretBytes,
            MessageHandler = (payload, length, ct) => context?.MessageHandler is { } handler
                ? handler(payload, length, ct)
                : throw new InvalidDataException("this silo hosts no service that takes messages"),
        };
        GrainRouter? router = null;
        TransportServer transport = await TransportServer.StartAsync(
            new IPEndPoint(IPAddress.Parse(options.Host), options.SiloPort),
            transportOptions,
            (payload, ct) => payload.Span.SequenceEqual("ping"u8)
                ? ValueTask.FromResult("pong"u8.ToArray())
                : (router ?? throw new InvalidOperationException("silo is still starting")).HandleAsync(payload, ct),
            cancellationToken).ConfigureAwait(false);
        var address = new SiloAddress(options.Host, transport.Port, time.GetUtcNow().ToUnixTimeMilliseconds());
        var membership = new MembershipAgent(table, address, options.Name, options.Timing, time, logging?.CreateLogger<MembershipAgent>());
        grainTypes.Add<ISiloDiagnosticsGrain, SiloDiagnosticsGrain>(() => new SiloDiagnosticsGrain(), "diagnostics");
        var grains = new LocalGrainRuntime(grainTypes, options.Grains, time) { Silo = address };
        router = new GrainRouter(address, membership, grains, grainTypes, transportOptions);
        grains.GrainFactoryOverride = router;
        context = new SiloContext(address, router, membership);
        foreach (ISiloExtension extension in extensions)
        {
            extension.RegisterGrains(grainTypes);
        }

        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(IPAddress.Parse(options.Host), options.HttpPort);
            k.Limits.MaxRequestBodySize = null; // each endpoint sets its own limit
        });
        builder.Services.AddSingleton(context);
        foreach (ISiloExtension extension in extensions)
        {
            extension.ConfigureServices(builder.Services, context);
        }

        WebApplication http = builder.Build();
        grains.Services = http.Services;
        var silo = new Silo(transport, membership, grains, router, http) { Context = context };
        http.MapGet("/healthz", () => Results.Text("alive"));
        http.MapGet("/readyz", () => silo.IsReady ? Results.Text("ready") : Results.Text("not ready", statusCode: StatusCodes.Status503ServiceUnavailable));
        http.MapGet("/membership", () => Results.Json(new MembershipSummary(
            address.ToString(), membership.View.Version, [.. membership.View.ActiveSilos.Select(a => a.ToString())])));
        foreach (ISiloExtension extension in extensions)
        {
            extension.Configure(http, context);
        }
        try
        {
            await http.StartAsync(cancellationToken).ConfigureAwait(false);
            string bound = http.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            silo.HttpPort = new Uri(bound).Port;
            context.HttpEndpoint = FormattableString.Invariant($"http://{options.Host}:{silo.HttpPort}");
            await membership.JoinAsync(cancellationToken).ConfigureAwait(false);
            membership.Start();
            silo._ownership = silo.FollowOwnershipAsync(silo._closing.Token);
            silo._collection = silo.CollectIdleAsync(options.Grains.IdleTimeout, time, silo._closing.Token);
            return silo;
        }
        catch
        {
            await silo.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Graceful shutdown: /readyz turns 503 first (no new work is sent here), the silo leaves membership
    /// (ShuttingDown, then Dead), its grains finish queued calls and deactivate, then the listeners close.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _stopping, 1) != 0)
        {
            return;
        }

        await _closing.CancelAsync().ConfigureAwait(false);
        await _ownership.ConfigureAwait(false);
        await _collection.ConfigureAwait(false);
        await _membership.LeaveAsync(cancellationToken).ConfigureAwait(false);
        await _grains.DeactivateAllAsync(cancellationToken).ConfigureAwait(false);
        await _router.DisposeAsync().ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
        await _http.StopAsync(cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _stopping) == 0)
        {
            Interlocked.Exchange(ref _stopping, 1);
            await _transport.DisposeAsync().ConfigureAwait(false);
            await _http.StopAsync().ConfigureAwait(false);
        }

        await _closing.CancelAsync().ConfigureAwait(false);
        await _ownership.ConfigureAwait(false);
        await _collection.ConfigureAwait(false);
        await _membership.DisposeAsync().ConfigureAwait(false);
        await _router.DisposeAsync().ConfigureAwait(false);
        await _http.DisposeAsync().ConfigureAwait(false);
        _closing.Dispose();
    }

    /// <summary>Collects idle activations every half idle timeout (at most once a second), on the silo's clock.</summary>
    private async Task CollectIdleAsync(TimeSpan idleTimeout, TimeProvider time, CancellationToken cancellationToken)
    {
        TimeSpan period = TimeSpan.FromTicks(Math.Max(idleTimeout.Ticks / 2, TimeSpan.TicksPerSecond));
        try
        {
            while (true)
            {
                await Task.Delay(period, time, cancellationToken).ConfigureAwait(false);
                await _grains.CollectIdleAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>After every membership change, deactivates grains that now belong to another silo.</summary>
    private async Task FollowOwnershipAsync(CancellationToken cancellationToken)
    {
        long seen = _membership.View.Version;
        try
        {
            while (true)
            {
                MembershipView view = await _membership.WaitForViewAsync(v => v.Version != seen, cancellationToken).ConfigureAwait(false);
                seen = view.Version;
                await _router.DropForeignActivationsAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }
}

/// <summary>What <c>GET /membership</c> answers: this silo, the version of its membership view, and the active silos in it.</summary>
public sealed record MembershipSummary(string Silo, long Version, IReadOnlyList<string> Active);
