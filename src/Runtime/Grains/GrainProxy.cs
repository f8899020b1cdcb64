using System.Collections.Concurrent;
using System.Reflection;

namespace LongCluster.Runtime;

/// <summary>
/// A typed grain reference: every interface method becomes a call through the runtime (activation, turn, deadline).
/// Built on <see cref="DispatchProxy"/>, so grain interfaces need no code generation.
/// </summary>
public class GrainProxy : DispatchProxy
{
    private IGrainInvoker _invoker = null!;
    private GrainId _id;
    private Type _interface = null!;

    public GrainId GrainId => _id;

    internal static TGrain Create<TGrain>(IGrainInvoker invoker, GrainId id)
        where TGrain : IGrain
    {
        TGrain proxy = Create<TGrain, GrainProxy>();
        var state = (GrainProxy)(object)proxy;
        state._invoker = invoker;
        state._id = id;
        state._interface = typeof(TGrain);
        return proxy;
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        ArgumentNullException.ThrowIfNull(targetMethod);
        Task<object?> call = _invoker.InvokeAsync(_id, _interface, targetMethod, args ?? []);
        return Awaitables.FromObjectTask(targetMethod.ReturnType, call);
    }
}

/// <summary>Where a grain reference sends its calls: this silo's runtime, or the router that finds the owning silo.</summary>
internal interface IGrainInvoker
{
    Task<object?> InvokeAsync(GrainId id, Type interfaceType, MethodInfo method, object?[] arguments);
}

/// <summary>Conversions between a grain method's awaitable return type and <c>Task&lt;object?&gt;</c>.</summary>
internal static class Awaitables
{
    private static readonly ConcurrentDictionary<Type, Func<Task<object?>, object>> FromObject = new();
    private static readonly ConcurrentDictionary<Type, Func<object, Task<object?>>> ToObject = new();

    public static object FromObjectTask(Type returnType, Task<object?> task)
    {
        if (returnType == typeof(Task))
        {
            return task;
        }

        if (returnType == typeof(ValueTask))
        {
            return new ValueTask(task);
        }

        return FromObject.GetOrAdd(returnType, static type =>
        {
            Type definition = type.IsGenericType ? type.GetGenericTypeDefinition() : type;
            string name = definition == typeof(Task<>) ? nameof(ToTask) : definition == typeof(ValueTask<>) ? nameof(ToValueTask)
                : throw new NotSupportedException($"grain methods return Task, Task<T>, ValueTask or ValueTask<T>, not {type.Name}");
            MethodInfo convert = typeof(Awaitables).GetMethod(name, BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(type.GetGenericArguments()[0]);
            return convert.CreateDelegate<Func<Task<object?>, object>>();
        })(task);
    }

    public static Task<object?> ToObjectTask(object? returned)
    {
        switch (returned)
        {
            case null:
                throw new InvalidOperationException("a grain method returned null instead of a task");
            case ValueTask valueTask:
                return Await(valueTask.AsTask());
        }

        return ToObject.GetOrAdd(returned.GetType(), static type =>
        {
            Type? result = FindTaskResult(type);
            if (result is null)
            {
                return task => Await((Task)task);
            }

            string name = type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ValueTask<>) ? nameof(FromValueTask) : nameof(FromTask);
            MethodInfo convert = typeof(Awaitables).GetMethod(name, BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(result);
            return convert.CreateDelegate<Func<object, Task<object?>>>();
        })(returned);
    }

    private static Type? FindTaskResult(Type type)
    {
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ValueTask<>))
        {
            return type.GetGenericArguments()[0];
        }

        for (Type? t = type; t is not null; t = t.BaseType)
        {
            if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Task<>))
            {
                Type argument = t.GetGenericArguments()[0];

                // async Task methods complete as Task<VoidTaskResult>: that is a plain Task.
                return argument.Name == "VoidTaskResult" ? null : argument;
            }
        }

        return null;
    }

    private static async Task<object?> Await(Task task)
    {
        await task.ConfigureAwait(false);
        return null;
    }

    private static async Task<object?> FromTask<T>(object task) => await ((Task<T>)task).ConfigureAwait(false);

    private static async Task<object?> FromValueTask<T>(object task) => await ((ValueTask<T>)task).ConfigureAwait(false);

    private static async Task<T> ToTask<T>(Task<object?> task) => (T)(await task.ConfigureAwait(false))!;

    private static object ToValueTask<T>(Task<object?> task) => new ValueTask<T>(ToTask<T>(task));
}
