namespace LongCluster.Kernels;

/// <summary>
/// The retrieval rule of DESIGN.md ("Memory tier: the retrieval rule") written out literally in double precision, for
/// tests and checks: every relevance is the triple sum of the text, every key set is built position by position. Slow
/// (O(T² · d) in the worst case). Inputs are widened to f32 first, as in <see cref="AttentionReference"/>.
/// </summary>
public static class RetrievalReference
{
    /// <summary>
    /// O <c>[T, Hq, d]</c> and LSE <c>[T, Hq]</c> of a sequence of T tokens (Q, K and V of the same positions 0..T−1)
    /// built by requests of <paramref name="requestRows"/> rows each, in order (empty: one request of all T rows).
    /// </summary>
    public static (double[] Output, double[] LogSumExp) Forward<T>(
        ReadOnlySpan<T> query,
        ReadOnlySpan<T> key,
        ReadOnlySpan<T> value,
        AttentionShape shape,
        RetrievalRule rule,
        ReadOnlySpan<int> requestRows = default,
        AttentionOptions? options = null)
        where T : unmanaged
    {
        RetrievalAttention.ValidateSequence(query, key, value, shape, rule, requestRows, new float[shape.QueryElements], new float[shape.LseElements]);
        var q = new float[query.Length];
        var k = new float[key.Length];
        var v = new float[value.Length];
        Widen.ToSingle(query, q);
        Widen.ToSingle(key, k);
        Widen.ToSingle(value, v);
        double scale = (options ?? AttentionOptions.Default).ResolveScale(shape.HeadDim);
        int tokens = shape.QueryTokens;
        int group = shape.GroupSize;
        int d = shape.HeadDim;
        var output = new double[shape.QueryElements];
        var lse = new double[shape.LseElements];

        double Q(int t, int h, int c) => q[((((long)t * shape.QueryHeads) + h) * d) + c];
        double K(int m, int g, int c) => k[((((long)m * shape.KeyValueHeads) + g) * d) + c];

        // Blocks: block j covers [n_init + j·B, n_init + (j+1)·B); only whole blocks exist.
        int blocks = Math.Max(0, (tokens - rule.Init) / rule.Block);

        // Representatives: for block j and KV head g, q̄ = mean of q[p, h] over the block's positions p and the G heads
        // h of g; the r positions m with the largest k[m, g] · q̄, ties to the lower position.
        var representatives = new int[blocks, shape.KeyValueHeads][];
        for (int j = 0; j < blocks; j++)
        {
            int first = rule.Init + (j * rule.Block);
            for (int g = 0; g < shape.KeyValueHeads; g++)
            {
                var mean = new double[d];
                for (int p = first; p < first + rule.Block; p++)
                {
                    for (int h = g * group; h < (g + 1) * group; h++)
                    {
                        for (int c = 0; c < d; c++)
                        {
                            mean[c] += Q(p, h, c);
                        }
                    }
                }

                for (int c = 0; c < d; c++)
                {
                    mean[c] /= rule.Block * group;
                }

                var candidates = new List<(double Score, int Position)>();
                for (int m = first; m < first + rule.Block; m++)
                {
                    double dot = 0;
                    for (int c = 0; c < d; c++)
                    {
                        dot += K(m, g, c) * mean[c];
                    }

                    candidates.Add((dot, m));
                }

                representatives[j, g] = [.. candidates.OrderByDescending(x => x.Score).ThenBy(x => x.Position).Take(rule.Representatives).Select(x => x.Position)];
            }
        }

        // Chunks: each request's rows in chunks of C consecutive rows from the request's first row.
        int requestStart = 0;
        int[] requests = requestRows.IsEmpty ? [tokens] : requestRows.ToArray();
        foreach (int rows in requests)
        {
            for (int t0 = requestStart; t0 < requestStart + rows; t0 += rule.Chunk)
            {
                int t1 = Math.Min(t0 + rule.Chunk, requestStart + rows);
                int evicted = (int)Math.Min(blocks, Math.Floor(Math.Max(0, t0 - rule.Local + 1 - rule.Init) / (double)rule.Block));
                for (int g = 0; g < shape.KeyValueHeads; g++)
                {
                    // Selection: relevance Σ_t Σ_h Σ_m q[t, h] · k[m, g]; the k most relevant evicted blocks, ties to the lower block.
                    var relevance = new List<(double Score, int Block)>();
                    for (int j = 0; j < evicted; j++)
                    {
                        double sum = 0;
                        for (int t = t0; t < t1; t++)
                        {
                            for (int h = g * group; h < (g + 1) * group; h++)
                            {
                                foreach (int m in representatives[j, g])
                                {
                                    for (int c = 0; c < d; c++)
                                    {
                                        sum += Q(t, h, c) * K(m, g, c);
                                    }
                                }
                            }
                        }

                        relevance.Add((sum, j));
                    }

                    int[] selected = [.. relevance.OrderByDescending(x => x.Score).ThenBy(x => x.Block).Take(rule.TopK).Select(x => x.Block)];
                    for (int t = t0; t < t1; t++)
                    {
                        // Keys of row t: init [0, min(n_init, t+1)) ∪ the selected blocks ∪ local [n_init + J·B, t].
                        var keys = new List<int>();
                        for (int m = 0; m < Math.Min(rule.Init, t + 1); m++)
                        {
                            keys.Add(m);
                        }

                        foreach (int j in selected)
                        {
                            for (int m = rule.Init + (j * rule.Block); m < rule.Init + ((j + 1) * rule.Block); m++)
                            {
                                keys.Add(m);
                            }
                        }

                        for (int m = rule.Init + (evicted * rule.Block); m <= t; m++)
                        {
                            keys.Add(m);
                        }

                        for (int h = g * group; h < (g + 1) * group; h++)
                        {
                            long row = ((long)t * shape.QueryHeads) + h;
                            lse[row] = Softmax(q.AsSpan((int)(row * d), d), k, v, keys, shape.KeyValueHeads, g, scale, output.AsSpan((int)(row * d), d));
                        }
                    }
                }
            }

            requestStart += rows;
        }

        return (output, lse);
    }

    /// <summary>Softmax attention over exactly <paramref name="keys"/>: writes O, returns LSE (−∞ and O = 0 when there are none).</summary>
    private static double Softmax(ReadOnlySpan<float> q, float[] k, float[] v, List<int> keys, int keyValueHeads, int g, double scale, Span<double> output)
    {
        int d = q.Length;
        output.Clear();
        if (keys.Count == 0)
        {
            return double.NegativeInfinity;
        }

        var scores = new double[keys.Count];
        for (int i = 0; i < keys.Count; i++)
        {
            int offset = ((keys[i] * keyValueHeads) + g) * d;
            double dot = 0;
            for (int c = 0; c < d; c++)
            {
                dot += (double)q[c] * k[offset + c];
            }

            scores[i] = dot * scale;
        }

        double max = scores.Max();
        double sum = 0;
        for (int i = 0; i < keys.Count; i++)
        {
            int offset = ((keys[i] * keyValueHeads) + g) * d;
            double p = Math.Exp(scores[i] - max);
            sum += p;
            for (int c = 0; c < d; c++)
            {
                output[c] += p * v[offset + c];
            }
        }

        for (int c = 0; c < d; c++)
        {
            output[c] /= sum;
        }

        return max + Math.Log(sum);
    }
}
