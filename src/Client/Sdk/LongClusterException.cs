using LongCluster.Contracts;

namespace LongCluster.Client;

/// <summary>A request the cluster refused or could not serve.</summary>
public sealed class LongClusterException(int status, ApiError error, Exception? inner = null) : Exception(error.Error, inner)
{
    /// <summary>HTTP status (0 when no silo answered).</summary>
    public int Status { get; } = status;

    /// <summary>invalid_request, not_found, conflict, degraded, limit_exceeded, too_large, unauthorized, unavailable, internal.</summary>
    public string Code { get; } = error.Code;

    /// <summary>The request field that was wrong, when one was.</summary>
    public string? Field { get; } = error.Field;

    /// <summary>Whether the same request may succeed later.</summary>
    public bool IsRetryable { get; } = error.Retryable;
}
