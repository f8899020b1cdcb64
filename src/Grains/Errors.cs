namespace LongCluster.Grains;

/// <summary>
/// A refusal the client API reports as a 4xx/5xx with <see cref="ApiError"/>. Messages start with the field they are
/// about (<c>"q: expected …"</c>) when there is one, so the field survives the trip between silos, where only the
/// exception's type name and message travel.
/// </summary>
public abstract class ServiceException(string? field, string message, Exception? inner = null)
    : Exception(field is null ? message : $"{field}: {message}", inner)
{
    public string? Field { get; } = field;
}

/// <summary>A request field is wrong (shape, dtype, range, non-finite values): 400; nothing changed.</summary>
public sealed class InvalidRequestException(string field, string message) : ServiceException(field, message);

/// <summary>The sequence does not exist (never created, deleted, or its coordinator's silo failed): 404.</summary>
public sealed class SequenceNotFoundException(string id)
    : ServiceException("id", $"no sequence '{id}' (never created, deleted, or lost with the silo that coordinated it)");

/// <summary>The request does not fit the sequence's state (layer out of order, degraded, chunk in flight): 409.</summary>
public sealed class SequenceStateException(string? field, string message) : ServiceException(field, message);

/// <summary>A shard holds no data for the sequence: its silo failed and it was activated afresh. The sequence is degraded.</summary>
public sealed class ShardLostException(string message) : ServiceException(null, message);

/// <summary>A per-silo limit (resident bytes, tokens per sequence, concurrent sequences) refuses the request: 429.</summary>
public sealed class LimitExceededException(string field, string message) : ServiceException(field, message);

/// <summary>A layer or decode step failed on some shard and was rolled back everywhere; the same request may succeed: 503.</summary>
public sealed class LayerFailedException(string message, Exception? inner = null) : ServiceException(null, message, inner);
