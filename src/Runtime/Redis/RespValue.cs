namespace LongCluster.Runtime.Redis;

/// <summary>The kinds of RESP2 replies.</summary>
public enum RespKind
{
    SimpleString,
    Error,
    Integer,
    BulkString,
    Array,
    Null,
}

/// <summary>One RESP reply: a string, an error, an integer, a bulk string, an array of replies, or null.</summary>
public sealed record RespValue(RespKind Kind, string? Text = null, long Integer = 0, IReadOnlyList<RespValue>? Items = null)
{
    public static RespValue NullValue { get; } = new(RespKind.Null);

    public bool IsNull => Kind == RespKind.Null;

    /// <summary>The string of a simple or bulk string reply; throws for an error reply.</summary>
    public string? AsString() => Kind switch
    {
        RespKind.SimpleString or RespKind.BulkString => Text,
        RespKind.Null => null,
        RespKind.Integer => Integer.ToString(System.Globalization.CultureInfo.InvariantCulture),
        RespKind.Error => throw new RedisException(Text ?? "error"),
        _ => throw new RedisException($"expected a string reply, got {Kind}"),
    };

    public long AsInteger() => Kind switch
    {
        RespKind.Integer => Integer,
        RespKind.Error => throw new RedisException(Text ?? "error"),
        _ => throw new RedisException($"expected an integer reply, got {Kind}"),
    };

    public IReadOnlyList<RespValue> AsArray() => Kind switch
    {
        RespKind.Array => Items!,
        RespKind.Null => [],
        RespKind.Error => throw new RedisException(Text ?? "error"),
        _ => throw new RedisException($"expected an array reply, got {Kind}"),
    };
}

/// <summary>An error reply from Redis, or a reply LongCluster cannot use.</summary>
public sealed class RedisException : Exception
{
    public RedisException(string message)
        : base(message)
    {
    }

    public RedisException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
