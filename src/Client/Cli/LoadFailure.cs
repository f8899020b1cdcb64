namespace LongCluster.Cli;

/// <summary>An operation of <c>bench load</c> failed and was recorded; the client gives up that sequence.</summary>
internal sealed class LoadFailure(Exception inner) : Exception(inner.Message, inner);
