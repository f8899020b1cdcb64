using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// Small vector loops over pointers for the decode and merge kernels (no per-call validation, unlike
/// TensorPrimitives). Vector512 and Vector256 give the same bits: <see cref="Dot"/> adds in the same order on both
/// (see there), and the element-wise loops run the same operation per element, the Vector512 loop handing its last
/// 8 elements to the Vector256 one and both leaving the same scalar tail.
/// </summary>
internal static unsafe class VectorMath
{
    /// <summary>
    /// Σ a[i]·b[i]. On Vector512 and Vector256 element i goes into lane i mod 16 of a 16-lane fused multiply-add
    /// sum (Vector256 keeps it as two accumulators over alternate 8-blocks), the upper 8 lanes are added onto the
    /// lower, <see cref="Vector256.Sum{T}"/> reduces them, and the last n mod 8 products are added in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Dot(SimdLevel level, float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0f;
        if (level == SimdLevel.Vector512)
        {
            Vector512<float> acc = Vector512<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                acc = Vector512.MultiplyAddEstimate(Vector512.Load(a + i), Vector512.Load(b + i), acc);
            }

            Vector256<float> lower = acc.GetLower();
            if (i + 8 <= n)
            {
                lower = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), Vector256.Load(b + i), lower);
                i += 8;
            }

            sum = Vector256.Sum(lower + acc.GetUpper());
        }
        else if (level == SimdLevel.Vector256)
        {
            Vector256<float> even = Vector256<float>.Zero;
            Vector256<float> odd = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                even = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), Vector256.Load(b + i), even);
                odd = Vector256.MultiplyAddEstimate(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), odd);
            }

            if (i + 8 <= n)
            {
                even = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), Vector256.Load(b + i), even);
                i += 8;
            }

            sum = Vector256.Sum(even + odd);
        }
        else if (level == SimdLevel.Vector128)
        {
            Vector128<float> acc = Vector128<float>.Zero;
            for (; i + 4 <= n; i += 4)
            {
                acc = Vector128.MultiplyAddEstimate(Vector128.Load(a + i), Vector128.Load(b + i), acc);
            }

            sum = Vector128.Sum(acc);
        }

        for (; i < n; i++)
        {
            sum += a[i] * b[i];
        }

        return sum;
    }

    /// <summary>y[i] = a·x1[i] + b·x2[i]; y may be x1 or x2.</summary>
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
