using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using LongCluster.Tensors;

namespace LongCluster.Kernels;

/// <summary>
/// Loads of f32 or bf16 elements as f32 vectors, so a kernel reads bf16 K/V rows in place: bf16 is the high half of
/// an f32, and widening is a zero-extension and a 16-bit shift, exact. The JIT keeps only the branch for the type.
/// </summary>
internal static unsafe class WideLoad
{
    /// <summary>The element types these loads read: f32 and bf16.</summary>
    public static void EnsureSupported<TB>()
        where TB : unmanaged
    {
        if (typeof(TB) != typeof(float) && typeof(TB) != typeof(BFloat16))
        {
            throw new NotSupportedException($"{typeof(TB).Name} rows cannot be read in place (f32 and bf16 only)");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Single<TB>(TB x)
        where TB : unmanaged =>
        typeof(TB) == typeof(float) ? Unsafe.As<TB, float>(ref x) : BitConverter.UInt32BitsToSingle((uint)Unsafe.As<TB, ushort>(ref x) << 16);

    /// <summary>16 elements as f32: a load, or bf16 widened (a zero-extension and a 16-bit shift, exact).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16<TB>(TB* p)
        where TB : unmanaged
    {
        if (typeof(TB) == typeof(float))
        {
            return Vector512.Load((float*)p);
        }

        Vector512<uint> bits = Avx512F.IsSupported
            ? Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)p))
            : Vector512.WidenLower(Vector512.Create(Vector256.Load((ushort*)p), Vector256<ushort>.Zero));
        return Vector512.ShiftLeft(bits, 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8<TB>(TB* p)
        where TB : unmanaged
    {
        if (typeof(TB) == typeof(float))
        {
            return Vector256.Load((float*)p);
        }

        Vector256<uint> bits = Avx2.IsSupported
            ? Avx2.ConvertToVector256Int32(Vector128.Load((ushort*)p)).AsUInt32()
            : Vector256.WidenLower(Vector256.Create(Vector128.Load((ushort*)p), Vector128<ushort>.Zero));
        return Vector256.ShiftLeft(bits, 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Load4<TB>(TB* p)
        where TB : unmanaged
    {
        if (typeof(TB) == typeof(float))
        {
            return Vector128.Load((float*)p);
        }

        return Vector128.ShiftLeft(Vector128.WidenLower(Vector128.CreateScalar(*(ulong*)p).AsUInt16()), 16).AsSingle();
    }
}
