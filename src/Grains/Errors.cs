namespace LongCluster.Grains;

/// <summary>What kind of refusal or failure a <see cref="ServiceException"/> is; the client API maps each to one HTTP status.</summary>
public enum ServiceErrorCode
{
    /// <summary>A request field is wrong (shape, dtype, range, non-finite values): 400; nothing changed.</summary>
    InvalidRequest,

    /// <summary>The sequence does not exist (never created, deleted, or lost with the silo that coordinated it): 404.</summary>
    NotFound,

    /// <summary>The request does not fit the sequence's state (layer out of order, chunk in flight): 409.</summary>
    Conflict,

    /// <summary>A shard lost its KV segments (its silo failed): the sequence refuses to answer rather than answer wrongly: 409.</summary>
    Degraded,

    /// <summary>A per-silo limit (resident bytes, tokens per sequence, concurrent sequences) refuses the request: 429.</summary>
    LimitExceeded,

    /// <summary>A layer or decode step failed on some shard and was rolled back everywhere, or a silo is gone: 503, retryable.</summary>
    Unavailable,

    /// <summary>A fault of the service itself (a bug), caught where it left a grain: 500, not retryable.</summary>
    Internal,
}

/// <summary>
/// The one failure type of the service. It crosses silos intact — Orleans serializes <see cref="Code"/>,
/// <see cref="Field"/> and the message — so the client API maps it to a status in one place without looking at type
/// names or message text. The message starts with the field (<c>"q: expected …"</c>) when there is one. It carries
/// no inner exception: the cause's text goes into the message instead, because an exception type Orleans has no
/// codec for would fail the whole reply (and <c>ServiceErrorFilter</c> turns any such exception leaving a grain into
/// an <see cref="ServiceErrorCode.Internal"/> one).
/// </summary>
[GenerateSerializer]
public sealed class ServiceException : Exception
{
    public ServiceException(ServiceErrorCode code, string? field, string message)
        : base(field is null ? message : $"{field}: {message}")
    {
        Code = code;
        Field = field;
    }

    [Id(0)]
    public ServiceErrorCode Code { get; private set; }

    /// <summary>The request field that was wrong, when one was.</summary>
    [Id(1)]
    public string? Field { get; private set; }

    /// <summary>Whether the same request may succeed later (a silo failed or is busy).</summary>
    public bool Retryable => Code == ServiceErrorCode.Unavailable;

    public static ServiceException Invalid(string field, string message) => new(ServiceErrorCode.InvalidRequest, field, message);

    public static ServiceException NotFound(string id) =>
        new(ServiceErrorCode.NotFound, "id", $"no sequence '{id}' (never created, deleted, or lost with the silo that coordinated it)");

    public static ServiceException Conflict(string? field, string message) => new(ServiceErrorCode.Conflict, field, message);

    public static ServiceException Degraded(string message) => new(ServiceErrorCode.Degraded, "id", message);

    public static ServiceException Limit(string field, string message) => new(ServiceErrorCode.LimitExceeded, field, message);

    public static ServiceException Unavailable(string message) => new(ServiceErrorCode.Unavailable, null, message);
}
