using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Runtime.Hosting;

/// <summary>
/// A service hosted by every silo (the attention service is one): it registers its grain classes, adds its
/// per-silo services to the silo's container, and maps its HTTP endpoints on the silo's Kestrel. The runtime stays
/// ignorant of what the service does.
/// </summary>
public interface ISiloExtension
{
    /// <summary>Registers grain classes (the registry may be shared by the silos of one process).</summary>
    void RegisterGrains(GrainTypeRegistry grainTypes);

    /// <summary>Adds this silo's services; <paramref name="silo"/> is usable once the silo has started.</summary>
    void ConfigureServices(IServiceCollection services, SiloContext silo);

    /// <summary>Maps HTTP endpoints and wires message handlers, after the container is built.</summary>
    void Configure(WebApplication app, SiloContext silo);
}

/// <summary>
/// What a silo offers the services it hosts: its address, its client-facing HTTP endpoint, grain references,
/// membership, and binary messages to other silos (the bulk path that grain calls are not).
/// </summary>
public sealed class SiloContext
{
    private readonly GrainRouter _router;

    internal SiloContext(SiloAddress address, GrainRouter router, MembershipAgent membership)
    {
        Address = address;
        _router = router;
        Membership = membership;
    }

    public SiloAddress Address { get; }

    public IGrainFactory GrainFactory => _router;

    public MembershipAgent Membership { get; }

    /// <summary>Base URL of this silo's HTTP endpoint (e.g. <c>http://10.0.0.5:8080</c>); set once Kestrel has bound.</summary>
    public string HttpEndpoint { get; internal set; } = "";

    /// <summary>Receives the <see cref="FrameKind.Message"/> frames other silos send here; one handler per silo.</summary>
    public StreamHandler? MessageHandler { get; set; }

    /// <summary>The silo that hosts <paramref name="grain"/> under the current view.</summary>
    public SiloAddress OwnerOf(GrainId grain) => _router.OwnerOf(grain);

    /// <inheritdoc cref="GrainRouter.SendMessageAsync"/>
    public Task SendMessageAsync(SiloAddress silo, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> body, CancellationToken cancellationToken) =>
        _router.SendMessageAsync(silo, head, body, cancellationToken);
}
