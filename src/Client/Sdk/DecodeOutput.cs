namespace LongCluster.Client;

/// <summary>A decode step's result: O <c>[Hq, d]</c>, LSE <c>[Hq]</c>, and the position the token took.</summary>
public sealed record DecodeOutput(long Position, float[] Output, float[] LogSumExp);
