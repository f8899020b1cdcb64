namespace LongCluster.Kernels;

/// <summary>Rows <c>[Start, Start + Length)</c> of a tensor's first dimension (keys of a K/V span, for <see cref="RetrievalAttention.AttendRanges{T}"/>).</summary>
public readonly record struct RowRange(int Start, int Length)
{
    /// <summary>One past the last row.</summary>
    public int End => Start + Length;
}
