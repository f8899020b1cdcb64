using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using LongCluster.Tensors;

namespace LongCluster.Kernels;

/// <summary>
/// Widening of the storage dtypes (f32, f16, bf16) to f32, exact on every path. The JIT keeps only the branch for
/// <c>T</c>. f16 goes through <see cref="TensorPrimitives.ConvertToSingle(ReadOnlySpan{Half}, Span{float})"/>
/// (vectorized bit manipulation): .NET 10 exposes no vcvtph2ps intrinsic to call instead.
/// </summary>
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

    /// <summary>
    /// Widens <paramref name="rows"/> rows of <paramref name="count"/> elements, <paramref name="sourceStride"/>
    /// elements apart, into rows <paramref name="destinationStride"/> floats apart, zeroing each destination row from
    /// <paramref name="count"/> up to <paramref name="paddedCount"/>. One call per tile, not per row: a call per
    /// 128-element row costs the decode kernel a fifth of its time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Rows<T>(T* source, long sourceStride, int rows, int count, float* destination, int destinationStride, int paddedCount)
        where T : unmanaged
    {
        for (int r = 0; r < rows; r++)
        {
            T* from = source + (r * sourceStride);
            float* to = destination + ((long)r * destinationStride);
            if (typeof(T) == typeof(BFloat16))
            {
                BFloat16ToSingle((ushort*)from, to, count);
            }
            else
            {
                ToSingle(new ReadOnlySpan<T>(from, count), new Span<float>(to, count));
            }

            new Span<float>(to + count, paddedCount - count).Clear();
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

    /// <summary>bf16 is the high half of an f32: widening is a 16-bit shift, exact on every path.</summary>
    private static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        unsafe
        {
            fixed (ushort* from = source)
            fixed (float* to = destination)
            {
                BFloat16ToSingle(from, to, source.Length);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void BFloat16ToSingle(ushort* source, float* destination, int count)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i + 32 <= count; i += 32)
            {
                (Vector512<uint> lower, Vector512<uint> upper) = Vector512.Widen(Vector512.Load(source + i));
                Vector512.ShiftLeft(lower, 16).AsSingle().Store(destination + i);
                Vector512.ShiftLeft(upper, 16).AsSingle().Store(destination + i + 16);
            }
        }

        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= count; i += 16)
            {
                (Vector256<uint> lower, Vector256<uint> upper) = Vector256.Widen(Vector256.Load(source + i));
                Vector256.ShiftLeft(lower, 16).AsSingle().Store(destination + i);
                Vector256.ShiftLeft(upper, 16).AsSingle().Store(destination + i + 8);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            for (; i + 8 <= count; i += 8)
            {
                (Vector128<uint> lower, Vector128<uint> upper) = Vector128.Widen(Vector128.Load(source + i));
                Vector128.ShiftLeft(lower, 16).AsSingle().Store(destination + i);
                Vector128.ShiftLeft(upper, 16).AsSingle().Store(destination + i + 4);
            }
        }

        for (; i < count; i++)
        {
            destination[i] = BitConverter.UInt32BitsToSingle((uint)source[i] << 16);
        }
    }
}
