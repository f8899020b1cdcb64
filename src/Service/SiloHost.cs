using System.Net;
using LongCluster.Grains;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace LongCluster.Service;

/// <summary>
/// One silo as a generic host: the Orleans silo (grains, membership, placement, silo-to-silo TLS) and the ASP.NET
/// Core client API side by side, with <c>/healthz</c> (the process is alive), <c>/readyz</c> (the Orleans silo is
/// Active in membership and the host is not stopping), <c>/membership</c> and the status page (<c>/</c>,
/// <see cref="StatusPage"/>). SIGTERM drains: readiness drops at
/// once, the silo leaves membership gracefully and its grains finish their calls, within
/// <see cref="SiloOptions.ShutdownTimeout"/>. The same code runs one silo per process (<c>src/Silo</c>,
/// <c>longcluster silo</c>) and N silos in one process (<see cref="LocalAttentionCluster"/>).
/// </summary>
public static class SiloHost
{
    /// <summary>Prefix of the line a silo prints once it serves: supervisors and tests wait for it.</summary>
    public const string ReadyLine = "LongCluster silo ";

    /// <summary>A silo configured from <paramref name="args"/>, the environment and appsettings (sections <c>LongCluster</c> and <c>LongCluster:Service</c>).</summary>
    public static WebApplication Build(string[] args, Action<ISiloBuilder>? configureSilo = null)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(args);
        SiloOptions silo = builder.Configuration.GetSection("LongCluster").Get<SiloOptions>() ?? new SiloOptions();
        AttentionServiceOptions service = builder.Configuration.GetSection("LongCluster:Service").Get<AttentionServiceOptions>() ?? new AttentionServiceOptions();
        IConfigurationSection membership = builder.Configuration.GetSection("LongCluster:Membership");
        return Build(builder, silo, service, orleans =>
        {
            // Orleans' failure-detection timing (ClusterMembershipOptions: ProbeTimeout, NumMissedProbesLimit, ...), for operators who tune it.
            orleans.Configure<ClusterMembershipOptions>(membership);
            configureSilo?.Invoke(orleans);
        });
    }

    /// <summary>Builds (does not start) a silo on <paramref name="builder"/>; options are validated first and a wrong one throws <see cref="ArgumentException"/> naming it.</summary>
    public static WebApplication Build(WebApplicationBuilder builder, SiloOptions silo, AttentionServiceOptions service, Action<ISiloBuilder>? configureSilo = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentNullException.ThrowIfNull(service);
        silo.Validate();
        service.Validate();
        IPAddress host = IPAddress.Parse(silo.Host);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(host, silo.HttpPort);
            k.Limits.MaxRequestBodySize = null; // each endpoint sets its own limit
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = silo.ShutdownTimeout);
        builder.Logging.AddFilter("Orleans", LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.AddSingleton(silo);
        builder.AddTelemetry(silo);
        builder.UseOrleans(orleans =>
        {
            orleans.AddActivityPropagation();
            orleans.AddLongCluster(silo);
            orleans.AddAttentionService(service);
            configureSilo?.Invoke(orleans);
        });

        WebApplication app = builder.Build();
        string? siloName = null;
        app.MapTelemetry(() => siloName ??= app.Services.GetRequiredService<ILocalSiloDetails>().SiloAddress.ToParsableString());
        MapHealth(app);
        ClientApi.Map(app, service);
        StatusPage.Map(app, service);
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            int port = app.HttpPort();
            app.Services.GetRequiredService<SiloApiEndpoint>().Url = FormattableString.Invariant($"http://{silo.Host}:{port}");
            SiloAddress address = app.Services.GetRequiredService<ILocalSiloDetails>().SiloAddress;
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(SiloHost)).LogInformation(
                "silo {Silo} serving the client API on port {Port}; kernel backend {Backend}", address, port, app.Services.GetRequiredService<SiloResources>().Backend.Name);
        });
        return app;
    }

    /// <summary>Prints <see cref="ReadyLine"/> (with the silo address and HTTP port) once <paramref name="app"/> serves: what a silo process says to whoever started it.</summary>
    public static WebApplication AnnounceWhenReady(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            SiloAddress address = app.Services.GetRequiredService<ILocalSiloDetails>().SiloAddress;
            Console.WriteLine($"{ReadyLine}{address.ToParsableString()} ready; http port {app.HttpPort()}");
        });
        return app;
    }

    /// <summary>The messages of <paramref name="e"/> and its inner exceptions, outermost first, each once: why a silo could not start, in one line.</summary>
    public static string Reasons(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        var messages = new List<string>();
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (!messages.Contains(x.Message))
            {
                messages.Add(x.Message);
            }
        }

        return string.Join(" → ", messages);
    }

    /// <summary>The HTTP port the silo's client API listens on (after start).</summary>
    public static int HttpPort(this WebApplication app) =>
        new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;

    private static void MapHealth(WebApplication app)
    {
        IHostApplicationLifetime lifetime = app.Lifetime;
        app.MapGet("/healthz", () => Results.Text("alive"));
        app.MapGet("/readyz", (IClusterMembershipService membership, ILocalSiloDetails local) =>
            !lifetime.ApplicationStopping.IsCancellationRequested && membership.CurrentSnapshot.GetSiloStatus(local.SiloAddress) == SiloStatus.Active
                ? Results.Text("ready")
                : Results.Text("not ready", statusCode: StatusCodes.Status503ServiceUnavailable));
        app.MapGet("/membership", (IClusterMembershipService membership, ILocalSiloDetails local) =>
        {
            ClusterMembershipSnapshot snapshot = membership.CurrentSnapshot;
            return Results.Json(new MembershipSummary(
                local.SiloAddress.ToParsableString(),
                snapshot.Version.Value,
                [.. snapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.SiloAddress.ToParsableString()).Order(StringComparer.Ordinal)]));
        });
    }
}

/// <summary>What <c>GET /membership</c> answers: this silo, the version of its membership view, and the active silos in it.</summary>
public sealed record MembershipSummary(string Silo, long Version, IReadOnlyList<string> Active);
