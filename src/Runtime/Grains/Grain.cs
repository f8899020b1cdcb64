namespace LongCluster.Runtime;

/// <summary>A grain's identity: its type name and key. At most one activation of it exists at a time.</summary>
public readonly record struct GrainId(string Type, string Key)
{
    public override string ToString() => $"{Type}/{Key}";
}

/// <summary>Marker for grain interfaces. Methods return <see cref="Task"/>, <see cref="Task{T}"/>, <see cref="ValueTask"/> or <see cref="ValueTask{T}"/>, with a <see cref="CancellationToken"/> last.</summary>
public interface IGrain;

/// <summary>A grain addressed by a string key.</summary>
public interface IGrainWithStringKey : IGrain;

/// <summary>The method may run while another call on the same activation is suspended at an await (it must not assume exclusive state).</summary>
[AttributeUsage(AttributeTargets.Method, Inherited = true)]
public sealed class ReentrantAttribute : Attribute;

/// <summary>
/// The call returns as soon as it is queued (its Task completes then); it still runs in turn, in order with the
/// caller's other calls to the same grain. Failures are not reported to the caller. The method must return
/// <see cref="Task"/> or <see cref="ValueTask"/>.
/// </summary>
[AttributeUsage(AttributeTargets.Method, Inherited = true)]
public sealed class OneWayAttribute : Attribute;

/// <summary>
/// The call's deadline when its caller sets none, instead of <see cref="GrainRuntimeOptions.DefaultCallTimeout"/>:
/// for calls known to run long (a layer of attention over a long sequence). The caller's token still cancels it.
/// </summary>
[AttributeUsage(AttributeTargets.Method, Inherited = true)]
public sealed class CallTimeoutAttribute(int seconds) : Attribute
{
    public TimeSpan Timeout { get; } = TimeSpan.FromSeconds(seconds);
}

/// <summary>
/// Activations of this grain class are never collected for being idle (they own state that exists nowhere else,
/// such as a KV segment); they go away when they ask to (<c>DeactivateOnIdle</c>), when their silo stops, or when
/// ownership moves.
/// </summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class KeepAliveAttribute : Attribute;

/// <summary>
/// Spread placement for the members of a group (the P shard grains of a sequence): the grain key must be
/// <c>group/index/count</c>, and member <c>index</c> of <c>count</c> lives on
/// <see cref="Placement.GrainPlacement.Spread"/>'s silo — P members over N silos within one of each other, stable
/// while the active silos are.
/// </summary>
[AttributeUsage(AttributeTargets.Interface)]
public sealed class SpreadPlacementAttribute : Attribute;

/// <summary>
/// Local placement for per-silo helpers: every silo that calls the grain gets its own activation on itself (like
/// Orleans' stateless workers), so such a grain must not hold state that has to be unique in the cluster.
/// </summary>
[AttributeUsage(AttributeTargets.Interface)]
public sealed class LocalPlacementAttribute : Attribute;

/// <summary>Why an activation is going away.</summary>
public enum DeactivationReason
{
    IdleTimeout,
    Requested,
    ShuttingDown,
}

/// <summary>
/// Base class of grains. The runtime creates the instance on the first call to its id, awaits
/// <see cref="OnActivateAsync"/> before any call, runs one call at a time (except methods marked
/// <see cref="ReentrantAttribute"/>), and awaits <see cref="OnDeactivateAsync"/> when it is collected.
/// </summary>
public abstract class Grain
{
    public GrainId GrainId { get; internal set; }

    /// <summary>The silo this activation runs on (null outside a silo, e.g. a bare <see cref="LocalGrainRuntime"/>).</summary>
    public LongCluster.Runtime.Membership.SiloAddress? Silo { get; internal set; }

    /// <summary>Makes references to other grains.</summary>
    protected internal IGrainFactory GrainFactory { get; internal set; } = null!;

    /// <summary>The services of the silo this activation runs on (per silo, also when N silos share a process).</summary>
    protected internal IServiceProvider Services { get; internal set; } = EmptyServices.Instance;

    internal bool DeactivationRequested { get; private set; }

    public virtual Task OnActivateAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public virtual Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Asked when the activation has been idle for the idle timeout, before it is collected: true keeps it. Grains
    /// that own state no other place holds answer whether that state is still wanted (a shard asks its coordinator).
    /// Runs outside the activation's turns, so it must only read state that does not change after activation.
    /// </summary>
    protected internal virtual Task<bool> KeepWhenIdleAsync(CancellationToken cancellationToken) => Task.FromResult(false);

    /// <summary>Deactivates this activation once the current call has finished.</summary>
    protected void DeactivateOnIdle() => DeactivationRequested = true;
}

/// <summary>Makes typed references to grains.</summary>
public interface IGrainFactory
{
    TGrain GetGrain<TGrain>(string key)
        where TGrain : IGrainWithStringKey;
}

/// <summary>A grain call that did not finish before its deadline (on this silo or on the silo that hosts the grain).</summary>
public sealed class GrainCallTimeoutException : TimeoutException
{
    public GrainCallTimeoutException(GrainId grain, string method, TimeSpan timeout)
        : this(grain, method, $"call {grain}.{method} did not complete within {timeout.TotalSeconds:0.###} s")
    {
    }

    /// <summary>A timeout reported by another silo, with that silo's message.</summary>
    public GrainCallTimeoutException(GrainId grain, string method, string message)
        : base(message)
    {
        Grain = grain;
        Method = method;
    }

    public GrainId Grain { get; }

    public string Method { get; }
}

/// <summary>Built into every silo: tells where a grain id is activated. For operators and cluster tests.</summary>
public interface ISiloDiagnosticsGrain : IGrainWithStringKey
{
    /// <summary>The address of the silo that hosts this activation.</summary>
    Task<string> WhereAsync(CancellationToken cancellationToken);
}

internal sealed class SiloDiagnosticsGrain : Grain, ISiloDiagnosticsGrain
{
    public Task<string> WhereAsync(CancellationToken cancellationToken) => Task.FromResult(Silo?.ToString() ?? "(no silo)");
}

/// <summary>The services of a grain outside a silo: none.</summary>
internal sealed class EmptyServices : IServiceProvider
{
    public static readonly EmptyServices Instance = new();

    public object? GetService(Type serviceType) => null;
}
