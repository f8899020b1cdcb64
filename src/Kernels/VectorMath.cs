using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// Small vector loops over pointers for the decode and merge kernels (no per-call validation, unlike
/// TensorPrimitives). Vector512 and Vector256 give the same bits: <see cref="Dots{TB}"/> adds in the same order on
/// both (see there), and the element-wise loops run the same operation per element, the Vector512 loop handing its last
/// 8 elements to the Vector256 one and both leaving the same scalar tail.
/// </summary>
internal static unsafe class VectorMath
{
    /// <summary>
    /// destination[r · destinationStride] = Σ_i a[r · lda + i] · b[i] for r &lt; rows: one key (or vector) against
    /// several query rows, <paramref name="b"/> read once per 4 rows and widened on the fly (f32 or bf16).
    /// Order, the same on Vector512 and Vector256: element i goes by fused multiply-add into lane i mod 16 of a
    /// 16-lane sum (Vector256 keeps it as two accumulators over alternate 8-blocks); the upper 8 lanes are added onto
    /// the lower, then the upper 4 onto the lower 4, and z = (z0 + z1) + (z2 + z3); the last n mod 8 products follow
    /// in order. Vector128 and scalar sum in their own orders.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Dots<TB>(SimdLevel level, float* a, int lda, int rows, TB* b, int n, float* destination, int destinationStride)
        where TB : unmanaged
    {
        WideLoad.EnsureSupported<TB>();
        int r = 0;
        if (level == SimdLevel.Vector512)
        {
            for (; r + 4 <= rows; r += 4)
            {
                Dot4x512(a + (r * lda), lda, b, n, destination + (r * destinationStride), destinationStride);
            }

            for (; r < rows; r++)
            {
                destination[r * destinationStride] = Dot1x512(a + (r * lda), b, n);
            }
        }
        else if (level == SimdLevel.Vector256)
        {
            for (; r < rows; r++)
            {
                destination[r * destinationStride] = Dot1x256(a + (r * lda), b, n);
            }
        }
        else
        {
            for (; r < rows; r++)
            {
                destination[r * destinationStride] = DotNarrow(level, a + (r * lda), b, n);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Dot4x512<TB>(float* a, int lda, TB* b, int n, float* destination, int destinationStride)
        where TB : unmanaged
    {
        float* a0 = a;
        float* a1 = a0 + lda;
        float* a2 = a1 + lda;
        float* a3 = a2 + lda;
        Vector512<float> c0 = Vector512<float>.Zero;
        Vector512<float> c1 = Vector512<float>.Zero;
        Vector512<float> c2 = Vector512<float>.Zero;
        Vector512<float> c3 = Vector512<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Vector512<float> x = WideLoad.Load16(b + i);
            c0 = Vector512.MultiplyAddEstimate(Vector512.Load(a0 + i), x, c0);
            c1 = Vector512.MultiplyAddEstimate(Vector512.Load(a1 + i), x, c1);
            c2 = Vector512.MultiplyAddEstimate(Vector512.Load(a2 + i), x, c2);
            c3 = Vector512.MultiplyAddEstimate(Vector512.Load(a3 + i), x, c3);
        }

        Vector256<float> l0 = c0.GetLower();
        Vector256<float> l1 = c1.GetLower();
        Vector256<float> l2 = c2.GetLower();
        Vector256<float> l3 = c3.GetLower();
        if (i + 8 <= n)
        {
            Vector256<float> x = WideLoad.Load8(b + i);
            l0 = Vector256.MultiplyAddEstimate(Vector256.Load(a0 + i), x, l0);
            l1 = Vector256.MultiplyAddEstimate(Vector256.Load(a1 + i), x, l1);
            l2 = Vector256.MultiplyAddEstimate(Vector256.Load(a2 + i), x, l2);
            l3 = Vector256.MultiplyAddEstimate(Vector256.Load(a3 + i), x, l3);
            i += 8;
        }

        destination[0] = Tail(a0, b, i, n, Fold(l0 + c0.GetUpper()));
        destination[destinationStride] = Tail(a1, b, i, n, Fold(l1 + c1.GetUpper()));
        destination[2 * destinationStride] = Tail(a2, b, i, n, Fold(l2 + c2.GetUpper()));
        destination[3 * destinationStride] = Tail(a3, b, i, n, Fold(l3 + c3.GetUpper()));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot1x512<TB>(float* a, TB* b, int n)
        where TB : unmanaged
    {
        Vector512<float> c = Vector512<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            c = Vector512.MultiplyAddEstimate(Vector512.Load(a + i), WideLoad.Load16(b + i), c);
        }

        Vector256<float> lower = c.GetLower();
        if (i + 8 <= n)
        {
            lower = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), WideLoad.Load8(b + i), lower);
            i += 8;
        }

        return Tail(a, b, i, n, Fold(lower + c.GetUpper()));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot1x256<TB>(float* a, TB* b, int n)
        where TB : unmanaged
    {
        Vector256<float> even = Vector256<float>.Zero;
        Vector256<float> odd = Vector256<float>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16)
        {
            even = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), WideLoad.Load8(b + i), even);
            odd = Vector256.MultiplyAddEstimate(Vector256.Load(a + i + 8), WideLoad.Load8(b + i + 8), odd);
        }

        if (i + 8 <= n)
        {
            even = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), WideLoad.Load8(b + i), even);
            i += 8;
        }

        return Tail(a, b, i, n, Fold(even + odd));
    }

    private static float DotNarrow<TB>(SimdLevel level, float* a, TB* b, int n)
        where TB : unmanaged
    {
        int i = 0;
        float sum = 0f;
        if (level == SimdLevel.Vector128)
        {
            Vector128<float> acc = Vector128<float>.Zero;
            for (; i + 4 <= n; i += 4)
            {
                acc = Vector128.MultiplyAddEstimate(Vector128.Load(a + i), WideLoad.Load4(b + i), acc);
            }

            sum = Vector128.Sum(acc);
        }

        return Tail(a, b, i, n, sum);
    }

    /// <summary>8 lanes to one: the upper 4 onto the lower 4, then (z0 + z1) + (z2 + z3).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Fold(Vector256<float> y)
    {
        Vector128<float> z = y.GetLower() + y.GetUpper();
        return (z.GetElement(0) + z.GetElement(1)) + (z.GetElement(2) + z.GetElement(3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Tail<TB>(float* a, TB* b, int i, int n, float sum)
        where TB : unmanaged
    {
        for (; i < n; i++)
        {
            sum += a[i] * WideLoad.Single(b[i]);
        }

        return sum;
    }

    /// <summary>y[i] = a·x1[i] + b·x2[i]; y may be x1 or x2.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Blend(SimdLevel level, float* y, float a, float* x1, float b, float* x2, int n)
    {
        int i = 0;
        if (level == SimdLevel.Vector512)
        {
            Vector512<float> va = Vector512.Create(a);
            Vector512<float> vb = Vector512.Create(b);
            for (; i + 16 <= n; i += 16)
            {
                Vector512.MultiplyAddEstimate(va, Vector512.Load(x1 + i), vb * Vector512.Load(x2 + i)).Store(y + i);
            }
        }

        if (level >= SimdLevel.Vector256)
        {
            Vector256<float> va = Vector256.Create(a);
            Vector256<float> vb = Vector256.Create(b);
            for (; i + 8 <= n; i += 8)
            {
                Vector256.MultiplyAddEstimate(va, Vector256.Load(x1 + i), vb * Vector256.Load(x2 + i)).Store(y + i);
            }
        }
        else if (level == SimdLevel.Vector128)
        {
            Vector128<float> va = Vector128.Create(a);
            Vector128<float> vb = Vector128.Create(b);
            for (; i + 4 <= n; i += 4)
            {
                Vector128.MultiplyAddEstimate(va, Vector128.Load(x1 + i), vb * Vector128.Load(x2 + i)).Store(y + i);
            }
        }

        for (; i < n; i++)
        {
            y[i] = (a * x1[i]) + (b * x2[i]);
        }
    }
}
