using System.Collections.Concurrent;
using System.Reflection;
using System.Text.Json;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Placement;
using LongCluster.Runtime.Transport;

namespace LongCluster.Runtime;

/// <summary>A grain call that could not reach the silo that owns the grain.</summary>
public sealed class SiloUnavailableException(SiloAddress silo, Exception inner)
    : Exception($"silo {silo} is unreachable: {inner.Message}", inner)
{
    public SiloAddress Silo { get; } = silo;
}

/// <summary>
/// Routes grain calls across the cluster. Where a grain lives is a pure function of its id and the active silos of
/// the current membership view — its hash owner, or for <see cref="SpreadPlacementAttribute"/> grains the spread
/// silo of its group member — so every silo with the same view computes the same place and a grain has one
/// activation while membership is stable (<see cref="LocalPlacementAttribute"/> helpers live on each caller's silo).
/// Calls for grains placed here run on this silo's <see cref="LocalGrainRuntime"/>, the rest travel as JSON requests
/// over persistent silo-to-silo connections. When the view changes, activations placed elsewhere now are
/// deactivated, so the new location's activation is the only one.
/// </summary>
public sealed class GrainRouter : IGrainFactory, IGrainInvoker, IAsyncDisposable
{
    private readonly SiloAddress _self;
    private readonly MembershipAgent _membership;
    private readonly LocalGrainRuntime _local;
    private readonly GrainTypeRegistry _registry;
    private readonly TransportOptions _transport;
    private readonly ConcurrentDictionary<SiloAddress, Lazy<Task<PeerConnection>>> _peers = new();
    private RingSnapshot _ring = new(-2, new ConsistentHashRing([]));

    public GrainRouter(SiloAddress self, MembershipAgent membership, LocalGrainRuntime local, GrainTypeRegistry registry, TransportOptions transport)
    {
        _self = self;
        _membership = membership;
        _local = local;
        _registry = registry;
        _transport = transport;
    }

    public TGrain GetGrain<TGrain>(string key)
        where TGrain : IGrainWithStringKey
    {
        ArgumentNullException.ThrowIfNull(key);
        (string typeName, _) = _registry.Resolve(typeof(TGrain));
        return GrainProxy.Create<TGrain>(this, new GrainId(typeName, key));
    }

    /// <summary>The silo that hosts <paramref name="grain"/> in the current view (its placement).</summary>
    public SiloAddress OwnerOf(GrainId grain) => LocationOf(grain, _registry.InterfaceOfType(grain.Type));

    public async Task<object?> InvokeAsync(GrainId id, Type interfaceType, MethodInfo method, object?[] arguments)
    {
        SiloAddress owner = LocationOf(id, interfaceType);
        if (owner == _self)
        {
            return await _local.InvokeAsync(id, interfaceType, method, arguments).ConfigureAwait(false);
        }

        GrainMethod info = GrainMethod.Of(method);
        CancellationToken cancellationToken = info.TokenIndex >= 0 && arguments[info.TokenIndex] is CancellationToken token ? token : default;
        var request = new GrainCall(
            id.Type,
            id.Key,
            interfaceType.FullName!,
            method.Name,
            [.. info.DataParameters.Select(p => JsonSerializer.SerializeToElement(arguments[p.Position], p.ParameterType))]);
        PeerConnection peer = await PeerAsync(owner).ConfigureAwait(false);
        byte[] reply;
        try
        {
            if (info.IsOneWay)
            {
                await peer.SendOneWayAsync(JsonSerializer.SerializeToUtf8Bytes(request), cancellationToken).ConfigureAwait(false);
                return null;
            }

            // The owner enforces the call's deadline; the transport waits a little longer so the owner's typed timeout wins.
            TimeSpan? wait = info.Timeout is { } own ? own + TimeSpan.FromSeconds(5) : null;
            reply = await peer.RequestAsync(JsonSerializer.SerializeToUtf8Bytes(request), cancellationToken, wait).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            _peers.TryRemove(owner, out _);
            throw new SiloUnavailableException(owner, e);
        }
        catch (RemoteException e) when (e.RemoteType == nameof(GrainCallTimeoutException))
        {
            // The owner enforced the call's deadline: report it as the same typed timeout a local call gives.
            throw new GrainCallTimeoutException(id, method.Name, e.RemoteMessage);
        }

        return info.ResultType is null ? null : JsonSerializer.Deserialize(reply, info.ResultType);
    }

    /// <summary>Answers a call from another silo (the silo's transport hands grain-call frames here).</summary>
    public async ValueTask<byte[]> HandleAsync(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        GrainCall call = JsonSerializer.Deserialize<GrainCall>(payload.Span) ?? throw new InvalidDataException("empty grain call");
        Type interfaceType = _registry.ResolveInterface(call.Interface);
        MethodInfo method = interfaceType.GetMethods().FirstOrDefault(m =>
                m.Name == call.Method && GrainMethod.Of(m).DataParameters.Length == call.Arguments.Length)
            ?? throw new MissingMethodException(call.Interface, call.Method);
        GrainMethod info = GrainMethod.Of(method);
        var arguments = new object?[method.GetParameters().Length];
        if (info.TokenIndex >= 0)
        {
            arguments[info.TokenIndex] = cancellationToken;
        }

        for (int i = 0; i < info.DataParameters.Length; i++)
        {
            ParameterInfo parameter = info.DataParameters[i];
            arguments[parameter.Position] = call.Arguments[i].Deserialize(parameter.ParameterType);
        }

        object? result = await _local.InvokeAsync(new GrainId(call.Type, call.Key), interfaceType, method, arguments).ConfigureAwait(false);
        return info.ResultType is null ? [] : JsonSerializer.SerializeToUtf8Bytes(result, info.ResultType);
    }

    /// <summary>
    /// Sends a binary message (<see cref="FrameKind.Message"/>) to <paramref name="silo"/>'s message handler: the bulk
    /// path between grains, written from the caller's memory.
    /// </summary>
    public async Task SendMessageAsync(SiloAddress silo, ReadOnlyMemory<byte> head, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        PeerConnection peer = await PeerAsync(silo).ConfigureAwait(false);
        try
        {
            await peer.SendMessageAsync(head, body, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            _peers.TryRemove(silo, out _);
            throw new SiloUnavailableException(silo, e);
        }
    }

    /// <summary>Deactivates the activations placed on another silo under the current view; returns how many.</summary>
    public async Task<int> DropForeignActivationsAsync(CancellationToken cancellationToken)
    {
        ConsistentHashRing ring = Ring();
        if (ring.IsEmpty)
        {
            return 0;
        }

        GrainId[] foreign = [.. _local.ActivationIds.Where(id => OwnerOf(id) != _self)];
        return await _local.DeactivateWhereAsync(foreign.Contains, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (Lazy<Task<PeerConnection>> peer in _peers.Values)
        {
            if (peer.IsValueCreated && peer.Value.IsCompletedSuccessfully)
            {
                await peer.Value.Result.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private SiloAddress LocationOf(GrainId id, Type? interfaceType)
    {
        PlacementStrategy placement = GrainMethod.PlacementOf(interfaceType);
        if (placement == PlacementStrategy.Local)
        {
            return _self;
        }

        if (placement == PlacementStrategy.Spread)
        {
            string[] parts = id.Key.Split('/');
            if (parts.Length < 3
                || !int.TryParse(parts[^2], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index)
                || !int.TryParse(parts[^1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int count)
                || index >= count)
            {
                throw new ArgumentException($"grain {id}: spread-placed grains need keys 'group/index/count' with index < count", nameof(id));
            }

            return GrainPlacement.Spread(_membership.View.ActiveSilos, string.Join('/', parts[..^2]), index, count);
        }

        return Ring().Owner(id);
    }

    private ConsistentHashRing Ring()
    {
        MembershipView view = _membership.View;
        RingSnapshot current = Volatile.Read(ref _ring);
        if (current.Version == view.Version)
        {
            return current.Ring;
        }

        var fresh = new RingSnapshot(view.Version, new ConsistentHashRing(view.ActiveSilos));
        Volatile.Write(ref _ring, fresh);
        return fresh.Ring;
    }

    private async Task<PeerConnection> PeerAsync(SiloAddress silo)
    {
        Lazy<Task<PeerConnection>> entry = _peers.GetOrAdd(silo, s => new Lazy<Task<PeerConnection>>(
            () => PeerConnection.ConnectAsync(s.Host, s.Port, _transport, null, CancellationToken.None)));
        try
        {
            PeerConnection peer = await entry.Value.ConfigureAwait(false);
            if (!peer.Completion.IsCompleted)
            {
                return peer;
            }
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or OperationCanceledException or InvalidDataException)
        {
            _peers.TryRemove(new KeyValuePair<SiloAddress, Lazy<Task<PeerConnection>>>(silo, entry));
            throw new SiloUnavailableException(silo, e);
        }

        // The connection closed since: connect afresh once.
        _peers.TryRemove(new KeyValuePair<SiloAddress, Lazy<Task<PeerConnection>>>(silo, entry));
        return await PeerAsync(silo).ConfigureAwait(false);
    }

    /// <summary>The ring of one membership view version; replaced as a whole.</summary>
    private sealed record RingSnapshot(long Version, ConsistentHashRing Ring);

    /// <summary>A grain call on the wire: the grain, the interface and method by name, the arguments as JSON.</summary>
    private sealed record GrainCall(string Type, string Key, string Interface, string Method, JsonElement[] Arguments);
}
