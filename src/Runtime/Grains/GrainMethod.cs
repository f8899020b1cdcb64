using System.Collections.Concurrent;
using System.Reflection;
using LongCluster.Runtime.Placement;

namespace LongCluster.Runtime;

/// <summary>
/// What the runtime needs to know about a grain interface method, read by reflection once per method rather than on
/// every call: where its CancellationToken sits, whether it is reentrant or one-way, its result type, and the
/// parameters that travel between silos.
/// </summary>
internal sealed class GrainMethod
{
    private static readonly ConcurrentDictionary<MethodInfo, GrainMethod> Methods = new();
    private static readonly ConcurrentDictionary<Type, PlacementStrategy> Placements = new();

    private GrainMethod(MethodInfo method)
    {
        ParameterInfo[] parameters = method.GetParameters();
        TokenIndex = Array.FindLastIndex(parameters, p => p.ParameterType == typeof(CancellationToken));
        DataParameters = [.. parameters.Where(p => p.ParameterType != typeof(CancellationToken))];
        IsReentrant = method.GetCustomAttribute<ReentrantAttribute>() is not null;
        Type returnType = method.ReturnType;
        ResultType = returnType.IsGenericType && (returnType.GetGenericTypeDefinition() == typeof(Task<>) || returnType.GetGenericTypeDefinition() == typeof(ValueTask<>))
            ? returnType.GetGenericArguments()[0]
            : null;
        IsOneWay = method.GetCustomAttribute<OneWayAttribute>() is not null;
        Timeout = method.GetCustomAttribute<CallTimeoutAttribute>()?.Timeout;
        if (IsOneWay && returnType != typeof(Task) && returnType != typeof(ValueTask))
        {
            throw new NotSupportedException($"[OneWay] method {method.Name} must return Task or ValueTask: a one-way call has no result");
        }
    }

    /// <summary>Index of the CancellationToken parameter (the last one of that type), or −1.</summary>
    public int TokenIndex { get; }

    /// <summary>The parameters other than the CancellationToken, in order.</summary>
    public ParameterInfo[] DataParameters { get; }

    public bool IsReentrant { get; }

    public bool IsOneWay { get; }

    /// <summary>The method's own default deadline (<see cref="CallTimeoutAttribute"/>), or null for the runtime's.</summary>
    public TimeSpan? Timeout { get; }

    /// <summary>T of Task&lt;T&gt; or ValueTask&lt;T&gt;; null for Task and ValueTask.</summary>
    public Type? ResultType { get; }

    public static GrainMethod Of(MethodInfo method) => Methods.GetOrAdd(method, static m => new GrainMethod(m));

    /// <summary>The placement a grain interface asks for (hash unless it carries a placement attribute).</summary>
    public static PlacementStrategy PlacementOf(Type? interfaceType) => interfaceType is null
        ? PlacementStrategy.Hash
        : Placements.GetOrAdd(interfaceType, static t =>
            t.GetCustomAttribute<LocalPlacementAttribute>() is not null ? PlacementStrategy.Local
            : t.GetCustomAttribute<SpreadPlacementAttribute>() is not null ? PlacementStrategy.Spread
            : PlacementStrategy.Hash);
}
