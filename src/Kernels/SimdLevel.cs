using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// The vector width a kernel call runs at. Chosen once per call (<see cref="Simd.Best"/> unless a test pins it
/// through <see cref="AttentionOptions"/>) and passed down, so one process can run and compare every path it has.
/// </summary>
internal enum SimdLevel
{
    Scalar,
    Vector128,
    Vector256,
    Vector512,
}

internal static class Simd
{
    /// <summary>The widest path this process accelerates (DOTNET_EnableAVX512F=0 and friends lower it).</summary>
    public static readonly SimdLevel Best =
        Vector512.IsHardwareAccelerated ? SimdLevel.Vector512
        : Vector256.IsHardwareAccelerated ? SimdLevel.Vector256
        : Vector128.IsHardwareAccelerated ? SimdLevel.Vector128
        : SimdLevel.Scalar;

    /// <summary>Every level this process can run, narrowest first.</summary>
    public static IReadOnlyList<SimdLevel> Available { get; } =
        Enum.GetValues<SimdLevel>().Where(level => level <= Best).ToArray();
}
