namespace LongCluster.Kernels;

/// <summary>
/// The slow, obvious definition of attention in double precision, for tests and for verifying sampled rows of
/// real runs. Inputs are widened to f32 first, so an f16/bf16 run is compared against the same rounded inputs.
/// </summary>
public static class AttentionReference
{
    /// <summary>Reference O <c>[Tq, Hq, d]</c> and LSE <c>[Tq, Hq]</c> for every row.</summary>
    public static (double[] Output, double[] LogSumExp) Forward<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        AttentionMask mask,
        scoped AttentionTokens tokens,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        var output = new double[shape.QueryElements];
        var lse = new double[shape.LseElements];
        Attention.ValidateCall(query, key, value, shape, new float[shape.QueryElements], new float[shape.LseElements]);
        ResolvedTokens resolved = tokens.Resolve(shape, mask);
        float[] q = Widened(query);
        float[] k = Widened(key);
        float[] v = Widened(value);
        double scale = (options ?? AttentionOptions.Default).ResolveScale(shape.HeadDim);
        var scores = new double[shape.KeyTokens];
        for (int t = 0; t < shape.QueryTokens; t++)
        {
            for (int h = 0; h < shape.QueryHeads; h++)
            {
                long row = ((long)t * shape.QueryHeads) + h;
                lse[row] = Row(q, k, v, shape, mask, resolved, scale, t, h, scores, output.AsSpan((int)(row * shape.HeadDim), shape.HeadDim));
            }
        }

        return (output, lse);
    }

    /// <summary>Reference for one query row and head, written to <paramref name="outputRow"/> (d values); returns its LSE.</summary>
    public static double Row<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        AttentionMask mask,
        scoped AttentionTokens tokens,
        int queryIndex,
        int queryHead,
        Span<double> outputRow,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        ResolvedTokens resolved = tokens.Resolve(shape, mask);
        double scale = (options ?? AttentionOptions.Default).ResolveScale(shape.HeadDim);
        int d = shape.HeadDim;
        float[] q = Widened(query.Slice((int)((((long)queryIndex * shape.QueryHeads) + queryHead) * d), d));
        int kvHead = queryHead / shape.GroupSize;
        float[] keys = new float[(long)shape.KeyTokens * d];
        float[] values = new float[(long)shape.KeyTokens * d];
        int stride = shape.KeyValueHeads * d;
        for (int j = 0; j < shape.KeyTokens; j++)
        {
            Widen.ToSingle(key.Slice((j * stride) + (kvHead * d), d), keys.AsSpan(j * d, d));
            Widen.ToSingle(value.Slice((j * stride) + (kvHead * d), d), values.AsSpan(j * d, d));
        }

        var single = shape with { QueryTokens = 1, QueryHeads = 1, KeyValueHeads = 1 };
        var rowTokens = new ResolvedTokens(
            new long[] { resolved.QueryPositions.Span[queryIndex] },
            resolved.KeyPositions,
            resolved.HasDocuments ? new int[] { resolved.QueryDocuments.Span[queryIndex] } : default,
            resolved.KeyDocuments);
        return Row(q, keys, values, single, mask, rowTokens, scale, 0, 0, new double[shape.KeyTokens], outputRow);
    }

    private static double Row(float[] q, float[] k, float[] v, AttentionShape shape, AttentionMask mask, ResolvedTokens tokens, double scale, int t, int h, double[] scores, Span<double> output)
    {
        int d = shape.HeadDim;
        int kvHead = h / shape.GroupSize;
        long qOffset = (((long)t * shape.QueryHeads) + h) * d;
        double max = double.NegativeInfinity;
        for (int j = 0; j < shape.KeyTokens; j++)
        {
            int qd = tokens.HasDocuments ? tokens.QueryDocuments.Span[t] : 0;
            int kd = tokens.HasDocuments ? tokens.KeyDocuments.Span[j] : 0;
            if (!mask.IsVisible(tokens.QueryPositions.Span[t], tokens.KeyPositions.Span[j], qd, kd))
            {
                scores[j] = double.NegativeInfinity;
                continue;
            }

            long kOffset = (((long)j * shape.KeyValueHeads) + kvHead) * d;
            double dot = 0;
            for (int c = 0; c < d; c++)
            {
                dot += (double)q[qOffset + c] * k[kOffset + c];
            }

            scores[j] = dot * scale;
            max = Math.Max(max, scores[j]);
        }

        output.Clear();
        if (double.IsNegativeInfinity(max))
        {
            return double.NegativeInfinity;
        }

        double sum = 0;
        for (int j = 0; j < shape.KeyTokens; j++)
        {
            if (double.IsNegativeInfinity(scores[j]))
            {
                continue;
            }

            double p = Math.Exp(scores[j] - max);
            sum += p;
            long vOffset = (((long)j * shape.KeyValueHeads) + kvHead) * d;
            for (int c = 0; c < d; c++)
            {
                output[c] += p * v[vOffset + c];
            }
        }

        for (int c = 0; c < d; c++)
        {
            output[c] /= sum;
        }

        return max + Math.Log(sum);
    }

    private static float[] Widened<T>(ReadOnlySpan<T> source)
        where T : unmanaged
    {
        var result = new float[source.Length];
        Widen.ToSingle(source, result);
        return result;
    }
}
