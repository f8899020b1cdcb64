namespace LongCluster.Client;

/// <summary>
/// A retry about to happen: what is retried (a request as <c>METHOD path</c>, or <c>prefill id</c> when a sequence
/// is deleted and built again), its attempt number (1 = the first retry), the wait before it, and the failure.
/// </summary>
public sealed record RetryNotice(string What, int Attempt, TimeSpan Delay, LongClusterException Failure);
