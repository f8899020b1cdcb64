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
    public static void Update(float* s, int lds, int rows, int cols, float* m, float* l, float* o, int ldo, int oCols)
    {
        for (int r = 0; r < rows; r++)
        {
            float* sr = s + ((long)r * lds);
            float rowMax = Max(sr, cols);
            float mOld = m[r];
            float mNew = MathF.Max(mOld, rowMax);
            if (mNew == float.NegativeInfinity)
            {
                new Span<float>(sr, cols).Clear();
                continue;
            }

            float sum = ExpInPlace(sr, cols, mNew);
            if (mOld == mNew)
            {
                l[r] += sum;
            }
            else
            {
                float alpha = Exp2.Scalar(mOld - mNew);
                l[r] = (l[r] * alpha) + sum;
                Scale(o + ((long)r * ldo), oCols, alpha);
                m[r] = mNew;
            }
        }
    }

    /// <summary>Writes the final rows: O = acc / l and LSE = ln(Σ e^s) = m·ln2 + ln(l); a row with l = 0 gets O = 0, LSE = −∞.</summary>
    public static void Finish(float* acc, float m, float l, float* output, int headDim, float* lse)
    {
        if (l > 0f)
        {
            float inverse = 1f / l;
            for (int c = 0; c < headDim; c++)
            {
                output[c] = acc[c] * inverse;
            }

            *lse = (m * Ln2) + MathF.Log(l);
        }
        else
        {
            new Span<float>(output, headDim).Clear();
            *lse = float.NegativeInfinity;
        }
    }

    private static float Max(float* x, int n)
    {
        int i = 0;
        float result = float.NegativeInfinity;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<float> acc = Vector256.Load(x);
            for (i = 8; i + 8 <= n; i += 8)
            {
                acc = Vector256.Max(acc, Vector256.Load(x + i));
            }

            Vector128<float> half = Vector128.Max(acc.GetLower(), acc.GetUpper());
            result = MathF.Max(MathF.Max(half[0], half[1]), MathF.Max(half[2], half[3]));
        }
        else if (Vector128.IsHardwareAccelerated && n >= 4)
        {
            Vector128<float> acc = Vector128.Load(x);
            for (i = 4; i + 4 <= n; i += 4)
            {
                acc = Vector128.Max(acc, Vector128.Load(x + i));
            }

            result = MathF.Max(MathF.Max(acc[0], acc[1]), MathF.Max(acc[2], acc[3]));
        }

        for (; i < n; i++)
        {
            result = MathF.Max(result, x[i]);
        }

        return result;
    }

    private static float ExpInPlace(float* x, int n, float max)
    {
        int i = 0;
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> m = Vector256.Create(max);
            Vector256<float> acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                Vector256<float> p = Exp2.Vector(Vector256.Load(x + i) - m);
                p.Store(x + i);
                acc += p;
            }

            sum = Vector256.Sum(acc);
        }
        else if (Vector128.IsHardwareAccelerated)
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

    private static void Scale(float* x, int n, float factor)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> f = Vector256.Create(factor);
            for (; i + 8 <= n; i += 8)
            {
                (Vector256.Load(x + i) * f).Store(x + i);
            }
        }
        else if (Vector128.IsHardwareAccelerated)
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
