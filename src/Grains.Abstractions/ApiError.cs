namespace LongCluster.Contracts;

/// <summary>The body of every 4xx/5xx answer.</summary>
/// <param name="Field">The request field that was wrong, when one was.</param>
/// <param name="Retryable">Whether the same request may succeed later (a silo failed or is busy).</param>
public sealed record ApiError(string Error, string? Field, bool Retryable, string Code);
