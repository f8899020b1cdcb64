using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>Small vector loops over pointers for the decode and merge kernels (no per-call validation, unlike TensorPrimitives).</summary>
internal static unsafe class VectorMath
{
    /// <summary>Σ a[i]·b[i], with a fixed reduction order for a given ISA.</summary>
    public static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> acc0 = Vector256<float>.Zero;
            Vector256<float> acc1 = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                acc0 = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), Vector256.Load(b + i), acc0);
                acc1 = Vector256.MultiplyAddEstimate(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), acc1);
            }

            for (; i + 8 <= n; i += 8)
            {
                acc0 = Vector256.MultiplyAddEstimate(Vector256.Load(a + i), Vector256.Load(b + i), acc0);
            }

            sum = Vector256.Sum(acc0 + acc1);
        }
        else if (Vector128.IsHardwareAccelerated)
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
    public static void Blend(float* y, float a, float* x1, float b, float* x2, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> va = Vector256.Create(a);
            Vector256<float> vb = Vector256.Create(b);
            for (; i + 8 <= n; i += 8)
            {
                Vector256.MultiplyAddEstimate(va, Vector256.Load(x1 + i), vb * Vector256.Load(x2 + i)).Store(y + i);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
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

    /// <summary>y[i] += a·x[i].</summary>
    public static void Axpy(float* y, float a, float* x, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> va = Vector256.Create(a);
            for (; i + 8 <= n; i += 8)
            {
                Vector256.MultiplyAddEstimate(va, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            Vector128<float> va = Vector128.Create(a);
            for (; i + 4 <= n; i += 4)
            {
                Vector128.MultiplyAddEstimate(va, Vector128.Load(x + i), Vector128.Load(y + i)).Store(y + i);
            }
        }

        for (; i < n; i++)
        {
            y[i] += a * x[i];
        }
    }
}
