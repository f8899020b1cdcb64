namespace LongCluster.Kernels;

/// <summary>
/// Single-node attention over spans: flash-attention forward (<see cref="Forward{T}"/>), split-K decode
/// (<see cref="Decode{T}"/>) and the exact merge of partial results (<see cref="MergePartials"/>).
/// Storage dtypes are float, Half and <see cref="LongCluster.Tensors.BFloat16"/>; compute and accumulation are f32.
/// </summary>
public static partial class Attention
{
    /// <summary>log2(e): scores are kept in the log2 domain so the softmax needs exp2 only.</summary>
    internal const float Log2E = 1.44269504088896341f;

    internal static void ValidateCall<T>(
        ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, in AttentionShape shape, Span<float> output, Span<float> logSumExp)
        where T : unmanaged
    {
        if (!Widen.IsSupported<T>())
        {
            throw new NotSupportedException($"storage dtype {typeof(T).Name} is not supported (float, Half, BFloat16)");
        }

        shape.Validate();
        CheckLength(query.Length, shape.QueryElements, nameof(query), "[Tq, Hq, d]", shape.QueryTokens, shape.QueryHeads, shape.HeadDim);
        CheckLength(key.Length, shape.KeyValueElements, nameof(key), "[Tk, Hkv, d]", shape.KeyTokens, shape.KeyValueHeads, shape.HeadDim);
        CheckLength(value.Length, shape.KeyValueElements, nameof(value), "[Tk, Hkv, d]", shape.KeyTokens, shape.KeyValueHeads, shape.HeadDim);
        CheckLength(output.Length, shape.QueryElements, nameof(output), "[Tq, Hq, d]", shape.QueryTokens, shape.QueryHeads, shape.HeadDim);
        CheckLength(logSumExp.Length, shape.LseElements, nameof(logSumExp), "[Tq, Hq]", shape.QueryTokens, shape.QueryHeads);
    }

    private static void CheckLength(int actual, long expected, string name, string layout, params int[] dims)
    {
        if (actual != expected)
        {
            throw new ArgumentException(
                $"{name} has {actual} elements, expected {layout} = [{string.Join(", ", dims)}] = {expected}", name);
        }
    }

    internal static int RoundUp(int value, int multiple) => (value + multiple - 1) / multiple * multiple;
}
