using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LongCluster.Tensors;

namespace LongCluster.Kernels;

/// <summary>Widening of the storage dtypes (f32, f16, bf16) to f32. The JIT keeps only the branch for <c>T</c>.</summary>
internal static class Widen
{
    public static bool IsSupported<T>() =>
        typeof(T) == typeof(float) || typeof(T) == typeof(Half) || typeof(T) == typeof(BFloat16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ToSingle<T>(ReadOnlySpan<T> source, Span<float> destination)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            MemoryMarshal.Cast<T, float>(source).CopyTo(destination);
        }
        else if (typeof(T) == typeof(Half))
        {
            TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<T, Half>(source), destination);
        }
        else if (typeof(T) == typeof(BFloat16))
        {
            BFloat16ToSingle(MemoryMarshal.Cast<T, ushort>(source), destination);
        }
        else
        {
            throw new NotSupportedException($"{typeof(T).Name} is not a storage dtype (f32, f16, bf16)");
        }
    }

    /// <summary>Widens and multiplies by <paramref name="scale"/>.</summary>
    public static void ToSingleScaled<T>(ReadOnlySpan<T> source, float scale, Span<float> destination)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            TensorPrimitives.Multiply(MemoryMarshal.Cast<T, float>(source), scale, destination);
            return;
        }

        ToSingle(source, destination);
        TensorPrimitives.Multiply(destination[..source.Length], scale, destination);
    }

    /// <summary>bf16 is the high half of an f32: widening is a 16-bit shift.</summary>
    private static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        int i = 0;
        ref ushort src = ref MemoryMarshal.GetReference(source);
        ref float dst = ref MemoryMarshal.GetReference(destination);
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= source.Length; i += 16)
            {
                Vector256<ushort> bits = Vector256.LoadUnsafe(ref src, (nuint)i);
                (Vector256<uint> lower, Vector256<uint> upper) = Vector256.Widen(bits);
                Vector256.ShiftLeft(lower, 16).AsSingle().StoreUnsafe(ref dst, (nuint)i);
                Vector256.ShiftLeft(upper, 16).AsSingle().StoreUnsafe(ref dst, (nuint)(i + 8));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= source.Length; i += 8)
            {
                Vector128<ushort> bits = Vector128.LoadUnsafe(ref src, (nuint)i);
                (Vector128<uint> lower, Vector128<uint> upper) = Vector128.Widen(bits);
                Vector128.ShiftLeft(lower, 16).AsSingle().StoreUnsafe(ref dst, (nuint)i);
                Vector128.ShiftLeft(upper, 16).AsSingle().StoreUnsafe(ref dst, (nuint)(i + 4));
            }
        }

        for (; i < source.Length; i++)
        {
            destination[i] = BitConverter.UInt32BitsToSingle((uint)source[i] << 16);
        }
    }
}
