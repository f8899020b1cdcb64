using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LongCluster.Kernels;

/// <summary>
/// The online-softmax step of a tile, in the log2 domain (scores already carry log2(e)). For each row: new running
/// max, scores become probabilities 2^(s − m) in place, the running sum and the output accumulator are rescaled by
/// 2^(m_old − m_new). A row that has seen no visible key keeps m = −∞, l = 0 and a zero accumulator, and its
/// probabilities are zeroed, so no NaN can arise from −∞ − (−∞).
/// </summary>
internal static unsafe class OnlineSoftmax
{
    /// <summary>ln 2: converts the log2-domain running max back to natural log.</summary>
    private const float Ln2 = 0.693147180559945309f;

    /// <param name="s">Scores <c>[rows × lds]</c>; <paramref name="cols"/> (a multiple of 8) are read, hidden ones are −∞.</param>
    /// <param name="m">Running max per row (log2 domain).</param>
    /// <param name="l">Running sum of probabilities per row.</param>
    /// <param name="o">Output accumulator <c>[rows × ldo]</c>; <paramref name="oCols"/> (a multiple of 8) are rescaled.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Update(SimdLevel level, float* s, int lds, int rows, int cols, float* m, float* l, float* o, int ldo, int oCols)
    {
        for (int r = 0; r < rows; r++)
        {
            float* sr = s + ((long)r * lds);
            float rowMax = Max(level, sr, cols);
            float mOld = m[r];
            float mNew = MathF.Max(mOld, rowMax);
            if (mNew == float.NegativeInfinity)
            {
                new Span<float>(sr, cols).Clear();
                continue;
            }

            float sum = ExpInPlace(level, sr, cols, mNew);
            if (mOld == mNew)
            {
                l[r] += sum;
            }
            else
            {
                // The polynomial of the vector paths, not float.Exp2: a libm call per row and tile cost more than the
                // row's exponentials.
                float alpha = level == SimdLevel.Scalar ? Exp2.Scalar(mOld - mNew) : Exp2.Vector(Vector128.CreateScalarUnsafe(mOld - mNew)).ToScalar();
                l[r] = (l[r] * alpha) + sum;
                Scale(level, o + ((long)r * ldo), oCols, alpha);
                m[r] = mNew;
            }
        }
    }

    /// <summary>Writes the final rows: O = acc / l and LSE = ln(Σ e^s) = m·ln2 + ln(l); a row with l = 0 gets O = 0, LSE = −∞.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Finish(float* acc, float m, float l, float* output, int headDim, float* lse)
    {
        if (l > 0f)
        {
            // One rounded product per element, so the vector width does not change a bit.
            TensorPrimitives.Multiply(new ReadOnlySpan<float>(acc, headDim), 1f / l, new Span<float>(output, headDim));

            *lse = (m * Ln2) + MathF.Log(l);
        }
        else
        {
            new Span<float>(output, headDim).Clear();
            *lse = float.NegativeInfinity;
        }
    }

    /// <summary>
    /// The largest of x[0..n). The vector paths take the processor's own maximum (<c>MaxNative</c>, one
    /// <c>vmaxps</c>): <c>Max</c>'s IEEE 754 maximum, which orders −0 below +0 and returns any NaN, is three dependent
    /// instructions per step on AVX-512 (<c>vrangeps</c> and two <c>vfixupimmps</c>); with <see cref="Exp2"/>'s plain
    /// conversion, decode with K and V in L3 ran 3–4% faster (<c>bench decode --tk 4096 --threads 1</c>). Neither
    /// difference reaches a result: 2^(s − m) is the same for m = ±0, and a NaN score gives a NaN probability, sum and
    /// output whatever the maximum is.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Max(SimdLevel level, float* x, int n)
    {
        int i = 0;
        float result = float.NegativeInfinity;
        if (level == SimdLevel.Vector512 && n >= 16)
        {
            Vector512<float> acc = Vector512.Load(x);
            for (i = 16; i + 16 <= n; i += 16)
            {
                acc = Vector512.MaxNative(acc, Vector512.Load(x + i));
            }

            Vector256<float> half = Vector256.MaxNative(acc.GetLower(), acc.GetUpper());
            result = Max4(Vector128.MaxNative(half.GetLower(), half.GetUpper()));
        }
        else if (level >= SimdLevel.Vector256 && n >= 8)
        {
            Vector256<float> acc = Vector256.Load(x);
            for (i = 8; i + 8 <= n; i += 8)
            {
                acc = Vector256.MaxNative(acc, Vector256.Load(x + i));
            }

            result = Max4(Vector128.MaxNative(acc.GetLower(), acc.GetUpper()));
        }
        else if (level >= SimdLevel.Vector128 && n >= 4)
        {
            Vector128<float> acc = Vector128.Load(x);
            for (i = 4; i + 4 <= n; i += 4)
            {
                acc = Vector128.MaxNative(acc, Vector128.Load(x + i));
            }

            result = Max4(acc);
        }

        for (; i < n; i++)
        {
            result = MathF.Max(result, x[i]);
        }

        return result;
    }

    private static float Max4(Vector128<float> v)
    {
        v = Vector128.MaxNative(v, Vector128.Shuffle(v, Vector128.Create(2, 3, 0, 1)));
        return Vector128.MaxNative(v, Vector128.Shuffle(v, Vector128.Create(1, 0, 3, 2))).ToScalar();
    }

    /// <summary>
    /// x = 2^(x − max) in place, returning Σ x. The Vector512 and Vector256 paths add in the same order — element i
    /// into lane i mod 16 of a 16-lane sum, which Vector256 keeps as two accumulators over alternate 8-blocks, then
    /// the upper 8 lanes onto the lower, then <see cref="Vector256.Sum{T}"/> — so they return the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float ExpInPlace(SimdLevel level, float* x, int n, float max)
    {
        int i = 0;
        float sum = 0f;
        if (level == SimdLevel.Vector512)
        {
            Vector512<float> m = Vector512.Create(max);
            Vector512<float> acc = Vector512<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                Vector512<float> p = Exp2.Vector(Vector512.Load(x + i) - m);
                p.Store(x + i);
                acc += p;
            }

            Vector256<float> lower = acc.GetLower();
            if (i + 8 <= n)
            {
                Vector256<float> p = Exp2.Vector(Vector256.Load(x + i) - Vector256.Create(max));
                p.Store(x + i);
                lower += p;
                i += 8;
            }

            sum = Vector256.Sum(lower + acc.GetUpper());
        }
        else if (level == SimdLevel.Vector256)
        {
            Vector256<float> m = Vector256.Create(max);
            Vector256<float> even = Vector256<float>.Zero;
            Vector256<float> odd = Vector256<float>.Zero;
            for (; i + 16 <= n; i += 16)
            {
                Vector256<float> p0 = Exp2.Vector(Vector256.Load(x + i) - m);
                Vector256<float> p1 = Exp2.Vector(Vector256.Load(x + i + 8) - m);
                p0.Store(x + i);
                p1.Store(x + i + 8);
                even += p0;
                odd += p1;
            }

            if (i + 8 <= n)
            {
                Vector256<float> p = Exp2.Vector(Vector256.Load(x + i) - m);
                p.Store(x + i);
                even += p;
                i += 8;
            }

            sum = Vector256.Sum(even + odd);
        }
        else if (level == SimdLevel.Vector128)
        {
            Vector128<float> m = Vector128.Create(max);
            Vector128<float> acc = Vector128<float>.Zero;
            for (; i + 4 <= n; i += 4)
            {
                Vector128<float> p = Exp2.Vector(Vector128.Load(x + i) - m);
                p.Store(x + i);
                acc += p;
            }

            sum = Vector128.Sum(acc);
        }

        for (; i < n; i++)
        {
            float p = Exp2.Scalar(x[i] - max);
            x[i] = p;
            sum += p;
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scale(SimdLevel level, float* x, int n, float factor)
    {
        int i = 0;
        if (level == SimdLevel.Vector512)
        {
            Vector512<float> f = Vector512.Create(factor);
            for (; i + 16 <= n; i += 16)
            {
                (Vector512.Load(x + i) * f).Store(x + i);
            }
        }

        if (level >= SimdLevel.Vector256)
        {
            Vector256<float> f = Vector256.Create(factor);
            for (; i + 8 <= n; i += 8)
            {
                (Vector256.Load(x + i) * f).Store(x + i);
            }
        }
        else if (level == SimdLevel.Vector128)
        {
            Vector128<float> f = Vector128.Create(factor);
            for (; i + 4 <= n; i += 4)
            {
                (Vector128.Load(x + i) * f).Store(x + i);
            }
        }

        for (; i < n; i++)
        {
            x[i] *= factor;
        }
    }
}
