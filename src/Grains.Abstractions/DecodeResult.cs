namespace LongCluster.Contracts;

/// <summary>A decode step's result for one layer: O <c>[Hq·d]</c> and LSE <c>[Hq]</c> of the new token, f32.</summary>
[GenerateSerializer, Immutable]
public sealed record DecodeResult(long Position, int Layer, float[] Output, float[] LogSumExp, double Seconds);
