namespace LongCluster.Kernels;

public static partial class Attention
{
    /// <summary>
    /// Merges two partial results of the same query rows over disjoint key sets into the result over their union:
    /// <c>m = max(l1, l2)</c>, <c>O = (e^(l1−m)·O1 + e^(l2−m)·O2) / (e^(l1−m) + e^(l2−m))</c>, <c>l = m + ln(e^(l1−m) + e^(l2−m))</c>.
    /// A row with LSE = −∞ on one side contributes nothing; on both sides the result is O = 0, LSE = −∞.
    /// Exact in real arithmetic and associative up to rounding; callers merge in a fixed order for reproducibility.
    /// The destination may be the same memory as either input (not a shifted overlap).
    /// </summary>
    /// <param name="output1">O of the first partial, <c>[rows, headDim]</c> (rows = any flattening of tokens × heads).</param>
    /// <param name="logSumExp1">LSE of the first partial, <c>[rows]</c>.</param>
    /// <param name="headDim">Elements per row of O.</param>
    public static void MergePartials(
        ReadOnlySpan<float> output1,
        ReadOnlySpan<float> logSumExp1,
        ReadOnlySpan<float> output2,
        ReadOnlySpan<float> logSumExp2,
        Span<float> output,
        Span<float> logSumExp,
        int headDim)
    {
        int rows = ValidateMerge(output1, logSumExp1, output2, logSumExp2, output, logSumExp, headDim);
        unsafe
        {
            fixed (float* o1 = output1, o2 = output2, o = output)
            {
                for (int r = 0; r < rows; r++)
                {
                    float l1 = logSumExp1[r];
                    float l2 = logSumExp2[r];
                    long offset = (long)r * headDim;
                    float m = MathF.Max(l1, l2);
                    if (m == float.NegativeInfinity)
                    {
                        new Span<float>(o + offset, headDim).Clear();
                        logSumExp[r] = float.NegativeInfinity;
                        continue;
                    }

                    float w1 = MathF.Exp(l1 - m);
                    float w2 = MathF.Exp(l2 - m);
                    float sum = w1 + w2;
                    VectorMath.Blend(Simd.Best, o + offset, w1 / sum, o1 + offset, w2 / sum, o2 + offset, headDim);
                    logSumExp[r] = m + MathF.Log(sum);
                }
            }
        }
    }

    /// <summary>The checks of <see cref="MergePartials"/> (shared with the other backends, so their errors are the same); returns the row count.</summary>
    internal static int ValidateMerge(
        ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2, Span<float> output, Span<float> logSumExp, int headDim)
    {
        if (headDim < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "headDim must be >= 1");
        }

        int rows = logSumExp1.Length;
        long elements = (long)rows * headDim;
        CheckLength(logSumExp2.Length, rows, nameof(logSumExp2), "[rows]", rows);
        CheckLength(logSumExp.Length, rows, nameof(logSumExp), "[rows]", rows);
        CheckLength(output1.Length, elements, nameof(output1), "[rows, headDim]", rows, headDim);
        CheckLength(output2.Length, elements, nameof(output2), "[rows, headDim]", rows, headDim);
        CheckLength(output.Length, elements, nameof(output), "[rows, headDim]", rows, headDim);
        return rows;
    }
}
