using System.Collections.Concurrent;
using System.Reflection;
using System.Threading.Channels;

namespace LongCluster.Runtime;

/// <summary>Settings of grain calls and activations.</summary>
public sealed class GrainRuntimeOptions
{
    /// <summary>Deadline of a call whose caller sets none.</summary>
    public TimeSpan DefaultCallTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>An activation idle this long is deactivated at the next collection.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromMinutes(10);

    public void Validate()
    {
        if (DefaultCallTimeout <= TimeSpan.Zero || IdleTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("DefaultCallTimeout and IdleTimeout must be positive", nameof(DefaultCallTimeout));
        }
    }
}

/// <summary>Which class implements each grain interface, and how to make one.</summary>
public sealed class GrainTypeRegistry
{
    private readonly Dictionary<Type, (string TypeName, Func<IServiceProvider, Grain> Create)> _types = [];
    private readonly Dictionary<string, Type> _interfaces = new(StringComparer.Ordinal);

    public GrainTypeRegistry Add<TInterface, TGrain>(Func<TGrain> create, string? typeName = null)
        where TInterface : IGrain
        where TGrain : Grain, TInterface
    {
        ArgumentNullException.ThrowIfNull(create);
        return Add<TInterface, TGrain>(_ => create(), typeName);
    }

    /// <summary>Registers a grain class whose constructor takes services of the silo it is activated on.</summary>
    public GrainTypeRegistry Add<TInterface, TGrain>(Func<IServiceProvider, TGrain> create, string? typeName = null)
        where TInterface : IGrain
        where TGrain : Grain, TInterface
    {
        ArgumentNullException.ThrowIfNull(create);
        if (!typeof(TInterface).IsInterface)
        {
            throw new ArgumentException($"{typeof(TInterface).Name} is not an interface", nameof(TInterface));
        }

        _types[typeof(TInterface)] = (typeName ?? typeof(TGrain).Name, create);
        _interfaces[typeof(TInterface).FullName!] = typeof(TInterface);
        return this;
    }

    /// <summary>The registered grain interface with this full name (calls arriving from other silos name it).</summary>
    internal Type ResolveInterface(string fullName) =>
        _interfaces.TryGetValue(fullName, out Type? type)
            ? type
            : throw new InvalidOperationException($"no grain class is registered for {fullName} on this silo");

    /// <summary>The interface registered under a grain type name.</summary>
    internal Type? InterfaceOfType(string typeName) =>
        _types.Where(t => t.Value.TypeName == typeName).Select(t => t.Key).FirstOrDefault();

    internal (string TypeName, Func<IServiceProvider, Grain> Create) Resolve(Type interfaceType) =>
        _types.TryGetValue(interfaceType, out var entry)
            ? entry
            : throw new InvalidOperationException($"no grain class is registered for {interfaceType.Name}");
}

/// <summary>
/// The grains of one silo: activation on first call, one call at a time per activation in arrival order (a
/// mailbox drained by one pump), reentrant methods alongside, a deadline on every call, collection of idle
/// activations on the injected clock, and deactivation of everything on shutdown. Remote routing (directory,
/// placement, transport) sits in front of this and is not part of it.
/// </summary>
public sealed class LocalGrainRuntime : IGrainFactory, IGrainInvoker, IAsyncDisposable
{
    /// <summary>Lazy so that racing first calls construct exactly one activation (GetOrAdd may run its factory twice).</summary>
    private readonly ConcurrentDictionary<GrainId, Lazy<Activation>> _activations = new();
    private readonly GrainTypeRegistry _registry;
    private readonly GrainRuntimeOptions _options;
    private readonly TimeProvider _time;

    public LocalGrainRuntime(GrainTypeRegistry registry, GrainRuntimeOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        _registry = registry;
        _options = options ?? new GrainRuntimeOptions();
        _options.Validate();
        _time = time ?? TimeProvider.System;
    }

    public int ActivationCount => _activations.Count;

    /// <summary>What grains get as their <see cref="Grain.GrainFactory"/>: in a silo, the cluster router.</summary>
    internal IGrainFactory? GrainFactoryOverride { get; set; }

    /// <summary>Services handed to grain constructors and <see cref="Grain.Services"/>; the silo's own container.</summary>
    public IServiceProvider Services { get; set; } = EmptyServices.Instance;

    /// <summary>The silo these grains run on; set by the silo once its address is known.</summary>
    public LongCluster.Runtime.Membership.SiloAddress? Silo { get; set; }

    public TGrain GetGrain<TGrain>(string key)
        where TGrain : IGrainWithStringKey
    {
        ArgumentNullException.ThrowIfNull(key);
        (string typeName, _) = _registry.Resolve(typeof(TGrain));
        return GrainProxy.Create<TGrain>(this, new GrainId(typeName, key));
    }

    /// <summary>
    /// Deactivates activations idle for <see cref="GrainRuntimeOptions.IdleTimeout"/>, except <see cref="KeepAliveAttribute"/>
    /// grains and those whose <see cref="Grain.KeepWhenIdleAsync"/> says to keep them; returns how many.
    /// </summary>
    public async Task<int> CollectIdleAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset now = _time.GetUtcNow();
        var collected = new List<Task>();
        foreach (Activation activation in Created())
        {
            if (now - activation.LastActive < _options.IdleTimeout || activation.Grain.GetType().IsDefined(typeof(KeepAliveAttribute), inherit: false))
            {
                continue;
            }

            bool keep;
            try
            {
                keep = await activation.Grain.KeepWhenIdleAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                keep = true; // cannot tell: keeping is the safe side
            }

            if (!keep && activation.TryBeginDeactivation(requireIdle: true))
            {
                collected.Add(FinishDeactivationAsync(activation, DeactivationReason.IdleTimeout, cancellationToken));
            }
        }

        await Task.WhenAll(collected).ConfigureAwait(false);
        return collected.Count;
    }

    /// <summary>Graceful shutdown: every activation finishes its queued calls and is deactivated.</summary>
    public async Task DeactivateAllAsync(CancellationToken cancellationToken)
    {
        var all = new List<Task>();
        foreach (Activation activation in Created())
        {
            if (activation.TryBeginDeactivation(requireIdle: false))
            {
                all.Add(FinishDeactivationAsync(activation, DeactivationReason.ShuttingDown, cancellationToken));
            }
        }

        await Task.WhenAll(all).ConfigureAwait(false);
    }

    /// <summary>Deactivates the activations whose ids match (ownership moved to another silo); returns how many.</summary>
    public async Task<int> DeactivateWhereAsync(Func<GrainId, bool> predicate, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        var tasks = new List<Task>();
        foreach (Activation activation in Created())
        {
            if (predicate(activation.Grain.GrainId) && activation.TryBeginDeactivation(requireIdle: false))
            {
                tasks.Add(FinishDeactivationAsync(activation, DeactivationReason.Requested, cancellationToken));
            }
        }

        await Task.WhenAll(tasks).ConfigureAwait(false);
        return tasks.Count;
    }

    public async ValueTask DisposeAsync() => await DeactivateAllAsync(CancellationToken.None).ConfigureAwait(false);

    /// <summary>This silo's activations' ids (for ownership checks after a membership change).</summary>
    public IReadOnlyList<GrainId> ActivationIds => [.. Created().Select(a => a.Grain.GrainId)];

    /// <summary>Runs one call on the grain's activation (creating it if needed) under the call's deadline.</summary>
    public Task<object?> InvokeAsync(GrainId id, Type interfaceType, MethodInfo method, object?[] arguments)
    {
        if (!GrainMethod.Of(method).IsOneWay)
        {
            return InvokeCoreAsync(id, interfaceType, method, arguments);
        }

        // Queued synchronously (before the first await), so order with the caller's next call is kept.
        Task<object?> call = InvokeCoreAsync(id, interfaceType, method, arguments);
        _ = call.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        return Task.FromResult<object?>(null);
    }

    private async Task<object?> InvokeCoreAsync(GrainId id, Type interfaceType, MethodInfo method, object?[] arguments)
    {
        GrainMethod info = GrainMethod.Of(method);
        int tokenIndex = info.TokenIndex;
        CancellationToken callerToken = tokenIndex >= 0 && arguments[tokenIndex] is CancellationToken given ? given : default;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(callerToken);
        TimeSpan timeout = info.Timeout ?? _options.DefaultCallTimeout;
        deadline.CancelAfter(timeout);
        if (tokenIndex >= 0)
        {
            arguments[tokenIndex] = deadline.Token;
        }

        bool reentrant = info.IsReentrant;
        try
        {
            while (true)
            {
                Activation activation = _activations.GetOrAdd(id, key => new Lazy<Activation>(() => Activate(key, interfaceType))).Value;
                Task<object?>? call = activation.TryEnqueue(grain => Invoke(method, grain, arguments), reentrant, deadline.Token);
                if (call is null)
                {
                    // It is being deactivated: wait until it is gone, then a fresh activation takes the call.
                    await activation.Deactivated.WaitAsync(deadline.Token).ConfigureAwait(false);
                    Remove(activation);
                    continue;
                }

                object? result = await call.ConfigureAwait(false);
                if (activation.Grain.DeactivationRequested && activation.TryBeginDeactivation(requireIdle: false))
                {
                    _ = FinishDeactivationAsync(activation, DeactivationReason.Requested, CancellationToken.None);
                }

                return result;
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !callerToken.IsCancellationRequested)
        {
            throw new GrainCallTimeoutException(id, method.Name, timeout);
        }
    }

    private Activation Activate(GrainId id, Type interfaceType)
    {
        Grain grain = _registry.Resolve(interfaceType).Create(Services);
        grain.GrainId = id;
        grain.Services = Services;
        grain.GrainFactory = GrainFactoryOverride ?? this;
        grain.Silo = Silo;
        return new Activation(grain, _time);
    }

    private async Task FinishDeactivationAsync(Activation activation, DeactivationReason reason, CancellationToken cancellationToken)
    {
        try
        {
            await activation.DeactivateAsync(reason, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Remove(activation);
        }
    }

    private IEnumerable<Activation> Created() => _activations.Values.Where(l => l.IsValueCreated).Select(l => l.Value);

    private void Remove(Activation activation)
    {
        GrainId id = activation.Grain.GrainId;
        if (_activations.TryGetValue(id, out Lazy<Activation>? entry) && entry.IsValueCreated && ReferenceEquals(entry.Value, activation))
        {
            _activations.TryRemove(new KeyValuePair<GrainId, Lazy<Activation>>(id, entry));
        }
    }

    private static async Task<object?> Invoke(MethodInfo method, Grain grain, object?[] arguments)
    {
        object? returned;
        try
        {
            returned = method.Invoke(grain, arguments);
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerException);
            throw;
        }

        return await Awaitables.ToObjectTask(returned).ConfigureAwait(false);
    }

    /// <summary>
    /// One activation: a mailbox of calls drained by a single pump, so calls run one at a time in arrival order.
    /// The first item is OnActivateAsync; the last is OnDeactivateAsync.
    /// </summary>
    private sealed class Activation
    {
        private readonly Channel<WorkItem> _mailbox = Channel.CreateUnbounded<WorkItem>(new UnboundedChannelOptions { SingleReader = true });
        private readonly TaskCompletionSource _activated = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _deactivated = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TimeProvider _time;
        private readonly Lock _lock = new();
        private int _pending;
        private bool _deactivating;
        private long _lastActiveTicks;

        public Activation(Grain grain, TimeProvider time)
        {
            Grain = grain;
            _time = time;
            Touch();
            _ = PumpAsync();
        }

        public Grain Grain { get; }

        public DateTimeOffset LastActive => new(Interlocked.Read(ref _lastActiveTicks), TimeSpan.Zero);

        public Task Deactivated => _deactivated.Task;

        /// <summary>Queues a call (or, if reentrant, runs it once activated); null if this activation is going away.</summary>
        public Task<object?>? TryEnqueue(Func<Grain, Task<object?>> work, bool reentrant, CancellationToken cancellationToken)
        {
            lock (_lock)
            {
                if (_deactivating)
                {
                    return null;
                }

                _pending++;
            }

            var item = new WorkItem(work, cancellationToken);
            if (reentrant)
            {
                _ = RunReentrantAsync(item);
            }
            else
            {
                _mailbox.Writer.TryWrite(item);
            }

            return item.Completion.Task;
        }

        public bool TryBeginDeactivation(bool requireIdle)
        {
            lock (_lock)
            {
                if (_deactivating || (requireIdle && _pending > 0))
                {
                    return false;
                }

                _deactivating = true;
                return true;
            }
        }

        public async Task DeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
        {
            var item = new WorkItem(async grain =>
            {
                await grain.OnDeactivateAsync(reason, cancellationToken).ConfigureAwait(false);
                return null;
            }, CancellationToken.None);
            _mailbox.Writer.TryWrite(item);
            _mailbox.Writer.TryComplete();
            try
            {
                await item.Completion.Task.ConfigureAwait(false);
            }
            finally
            {
                _deactivated.TrySetResult();
            }
        }

        private async Task PumpAsync()
        {
            try
            {
                await Grain.OnActivateAsync(CancellationToken.None).ConfigureAwait(false);
                _activated.TrySetResult();
            }
            catch (Exception e)
            {
                _activated.TrySetException(e);
            }

            await foreach (WorkItem item in _mailbox.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                await RunAsync(item).ConfigureAwait(false);
            }
        }

        private async Task RunReentrantAsync(WorkItem item)
        {
            try
            {
                await _activated.Task.ConfigureAwait(false);
            }
            catch (Exception e)
            {
                Finish(item, e);
                return;
            }

            await RunAsync(item).ConfigureAwait(false);
        }

        private async Task RunAsync(WorkItem item)
        {
            if (item.Completion.Task.IsCompleted)
            {
                Finish(item, null);
                return;
            }

            Exception? failure = null;
            object? result = null;
            try
            {
                await _activated.Task.ConfigureAwait(false);
                result = await item.Work(Grain).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                failure = e;
            }

            if (failure is null)
            {
                item.Completion.TrySetResult(result);
            }

            Finish(item, failure);
        }

        private void Finish(WorkItem item, Exception? failure)
        {
            if (failure is OperationCanceledException canceled)
            {
                item.Completion.TrySetCanceled(canceled.CancellationToken);
            }
            else if (failure is not null)
            {
                item.Completion.TrySetException(failure);
            }

            item.Dispose();
            Touch();
            lock (_lock)
            {
                _pending = Math.Max(0, _pending - 1);
            }
        }

        private void Touch() => Interlocked.Exchange(ref _lastActiveTicks, _time.GetUtcNow().UtcTicks);
    }

    /// <summary>A queued call; its completion is cancelled as soon as its deadline passes, even while it waits its turn.</summary>
    private sealed class WorkItem : IDisposable
    {
        private readonly CancellationTokenRegistration _registration;

        public WorkItem(Func<Grain, Task<object?>> work, CancellationToken cancellationToken)
        {
            Work = work;
            _registration = cancellationToken.Register(() => Completion.TrySetCanceled(cancellationToken));
        }

        public Func<Grain, Task<object?>> Work { get; }

        public TaskCompletionSource<object?> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Dispose() => _registration.Dispose();
    }
}
