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
        AttentionMask mask, ResolvedTokens tokens, float* s, int lds, int rows, int k0, int keys, long[] rowPositions, int[] rowDocuments)
    {
        long[] keyPositions = tokens.KeyPositions;
        int[] keyDocuments = tokens.KeyDocuments;
        bool documents = tokens.HasDocuments;
        for (int r = 0; r < rows; r++)
        {
            float* sr = s + ((long)r * lds);
            long qp = rowPositions[r];
            if (!documents)
            {
                // Every positional mask is an interval of key positions per query row.
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
}
