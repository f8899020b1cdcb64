using System.Runtime.CompilerServices;

namespace LongCluster.Kernels;

/// <summary>Hides, per element, the scores of a partly visible tile that the mask does not let a row see (−∞).</summary>
internal static unsafe class ScoreMask
{
    /// <param name="s">Scores <c>[rows × lds]</c>; columns 0..keys−1 are keys k0..k0+keys−1.</param>
    /// <param name="rowPositions">Global position of each score row's query.</param>
    /// <param name="rowDocuments">Document of each score row's query (read only when the tokens have documents).</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Apply(
        AttentionMask mask, ResolvedTokens tokens, float* s, int lds, int rows, int k0, int keys, ReadOnlySpan<long> rowPositions, ReadOnlySpan<int> rowDocuments)
    {
        ReadOnlySpan<long> keyPositions = tokens.KeyPositions.Span;
        ReadOnlySpan<int> keyDocuments = tokens.KeyDocuments.Span;
        bool documents = tokens.HasDocuments;
        if (!documents && Ascending(keyPositions, k0, keys))
        {
            // Every positional mask shows a row one interval of key positions; over ascending keys that is one run of
            // columns, found by binary search, and the rest is filled: no per-element test on the causal diagonal.
            for (int r = 0; r < rows; r++)
            {
                (long lo, long hi) = mask.VisibleRange(rowPositions[r]);
                int first = FirstAtLeast(keyPositions, k0, keys, lo);
                int end = hi == long.MaxValue ? keys : FirstAtLeast(keyPositions, k0, keys, hi + 1);
                var row = new Span<float>(s + ((long)r * lds), keys);
                row[..first].Fill(float.NegativeInfinity);
                row[Math.Max(first, end)..].Fill(float.NegativeInfinity);
            }

            return;
        }

        for (int r = 0; r < rows; r++)
        {
            float* sr = s + ((long)r * lds);
            long qp = rowPositions[r];
            if (!documents)
            {
                (long lo, long hi) = mask.VisibleRange(qp);
                for (int j = 0; j < keys; j++)
                {
                    long kp = keyPositions[k0 + j];
                    if (kp < lo || kp > hi)
                    {
                        sr[j] = float.NegativeInfinity;
                    }
                }

                continue;
            }

            int qd = rowDocuments[r];
            for (int j = 0; j < keys; j++)
            {
                if (!mask.IsVisible(qp, keyPositions[k0 + j], qd, keyDocuments[k0 + j]))
                {
                    sr[j] = float.NegativeInfinity;
                }
            }
        }
    }

    /// <summary>
    /// Scores of the padding columns <paramref name="keys"/>..<paramref name="width"/>−1 (past a tile's last key, up to
    /// the multiple of 8 the kernels compute) become −∞, for <paramref name="rows"/> rows <paramref name="lds"/> apart.
    /// </summary>
    public static void HidePadding(float* s, int lds, int rows, int keys, int width)
    {
        for (int r = 0; keys < width && r < rows; r++)
        {
            new Span<float>(s + ((long)r * lds) + keys, width - keys).Fill(float.NegativeInfinity);
        }
    }

    /// <summary>Whether a tile's visible columns end, row by row, at a position bound: no documents, keys ascending.</summary>
    public static bool HasColumnLimits(ResolvedTokens tokens, int k0, int keys) =>
        !tokens.HasDocuments && Ascending(tokens.KeyPositions.Span, k0, keys);

    /// <summary>
    /// The first column (of ascending keys k0..k0+keys−1) that none of rows r0..r0+count−1 can see, every column
    /// after it hidden too: the end of what a block of rows needs computed.
    /// </summary>
    public static int VisibleEnd(AttentionMask mask, ResolvedTokens tokens, int k0, int keys, long[] rowPositions, int r0, int count)
    {
        long hi = long.MinValue;
        for (int r = r0; r < r0 + count; r++)
        {
            hi = Math.Max(hi, mask.VisibleRange(rowPositions[r]).Hi);
        }

        return hi == long.MaxValue ? keys : FirstAtLeast(tokens.KeyPositions.Span, k0, keys, hi + 1);
    }

    private static bool Ascending(ReadOnlySpan<long> positions, int start, int count)
    {
        for (int j = start + 1; j < start + count; j++)
        {
            if (positions[j] <= positions[j - 1])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The first column j in [0, count) with positions[start + j] ≥ value (count if none), over ascending positions.</summary>
    private static int FirstAtLeast(ReadOnlySpan<long> positions, int start, int count, long value)
    {
        int lo = 0;
        int hi = count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (positions[start + mid] < value)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }
}
