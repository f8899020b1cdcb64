namespace LongCluster.Kernels;

/// <summary>
/// The dimensions of one attention call. Q is <c>[QueryTokens, QueryHeads, HeadDim]</c>, K and V are
/// <c>[KeyTokens, KeyValueHeads, HeadDim]</c>, O is <c>[QueryTokens, QueryHeads, HeadDim]</c> and LSE is
/// <c>[QueryTokens, QueryHeads]</c>, all row-major. Query head <c>h</c> reads KV head <c>h / (QueryHeads / KeyValueHeads)</c>
/// (GQA; MQA when KeyValueHeads is 1).
/// </summary>
public readonly record struct AttentionShape(int QueryTokens, int KeyTokens, int QueryHeads, int KeyValueHeads, int HeadDim)
{
    /// <summary>Largest head dimension the kernels accept.</summary>
    public const int MaxHeadDim = 256;

    /// <summary>Query heads per KV head.</summary>
    public int GroupSize => QueryHeads / KeyValueHeads;

    public long QueryElements => (long)QueryTokens * QueryHeads * HeadDim;

    public long KeyValueElements => (long)KeyTokens * KeyValueHeads * HeadDim;

    public long LseElements => (long)QueryTokens * QueryHeads;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first dimension that is out of range.</summary>
    public void Validate()
    {
        if (QueryTokens < 0)
        {
            throw new ArgumentException($"QueryTokens must be >= 0, got {QueryTokens}", "shape");
        }

        if (KeyTokens < 0)
        {
            throw new ArgumentException($"KeyTokens must be >= 0, got {KeyTokens}", "shape");
        }

        if (QueryHeads < 1 || KeyValueHeads < 1)
        {
            throw new ArgumentException($"head counts must be >= 1, got QueryHeads={QueryHeads}, KeyValueHeads={KeyValueHeads}", "shape");
        }

        if (QueryHeads % KeyValueHeads != 0)
        {
            throw new ArgumentException($"QueryHeads ({QueryHeads}) must be a multiple of KeyValueHeads ({KeyValueHeads})", "shape");
        }

        if (HeadDim < 1 || HeadDim > MaxHeadDim)
        {
            throw new ArgumentException($"HeadDim must be in 1..{MaxHeadDim}, got {HeadDim}", "shape");
        }

        if (QueryElements > int.MaxValue || KeyValueElements > int.MaxValue)
        {
            throw new ArgumentException($"Q or K/V has more than {int.MaxValue} elements; split the call", "shape");
        }
    }

    /// <summary>Live query/key pairs under a mask are counted by <see cref="AttentionMask.CountLivePairs"/>; this is the FLOP count for them.</summary>
    public double Flops(long livePairs) => 4.0 * HeadDim * QueryHeads * livePairs;
}
