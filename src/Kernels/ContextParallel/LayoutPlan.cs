namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// Where every token and head of one chunk of T tokens goes on P shards. Ranks form a grid of U Ulysses members ×
/// R ring shards (R·U = P); rank = ring · U + u. Token offsets are 0..T−1 within the chunk.
/// <list type="bullet">
/// <item>Ring shards (<see cref="RingShardTokens"/>): contiguous blocks, stripes, or zigzag chunk pairs.</item>
/// <item>Input/output tokens of a rank (<see cref="RankTokens"/>): its ring shard, split contiguously over the U
/// members of its Ulysses group.</item>
/// <item>Heads of Ulysses member u: query heads [u·Hq/U, (u+1)·Hq/U) and the KV heads they read. U must divide Hq,
/// and either U divides Hkv (each member gets Hkv/U KV heads) or Hkv divides U (each KV head is replicated on the
/// U/Hkv members whose query heads read it).</item>
/// </list>
/// </summary>
public sealed class LayoutPlan
{
    private readonly long[][] _ringShards;
    private readonly long[][] _rankTokens;

    public LayoutPlan(ContextLayout layout, int shards, int tokens, int queryHeads, int keyValueHeads)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (shards < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(shards), shards, "shards must be >= 1");
        }

        if (tokens < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "tokens must be >= 0");
        }

        Layout = layout;
        Shards = shards;
        Tokens = tokens;
        QueryHeads = queryHeads;
        KeyValueHeads = keyValueHeads;
        UlyssesDegree = layout.Kind switch
        {
            LayoutKind.Ulysses => shards,
            LayoutKind.Hybrid => layout.HybridUlyssesDegree,
            _ => 1,
        };
        if (shards % UlyssesDegree != 0)
        {
            throw new ArgumentException($"layout {layout} needs the shard count ({shards}) to be a multiple of the Ulysses degree {UlyssesDegree}", nameof(shards));
        }

        RingDegree = shards / UlyssesDegree;
        ValidateHeads(layout, UlyssesDegree, queryHeads, keyValueHeads);

        _ringShards = new long[RingDegree][];
        for (int i = 0; i < RingDegree; i++)
        {
            _ringShards[i] = RingShard(layout, RingDegree, tokens, i);
        }

        _rankTokens = new long[shards][];
        for (int ring = 0; ring < RingDegree; ring++)
        {
            long[] shard = _ringShards[ring];
            for (int u = 0; u < UlyssesDegree; u++)
            {
                int start = (int)((long)shard.Length * u / UlyssesDegree);
                int end = (int)((long)shard.Length * (u + 1) / UlyssesDegree);
                _rankTokens[(ring * UlyssesDegree) + u] = shard[start..end];
            }
        }
    }

    public ContextLayout Layout { get; }

    public int Shards { get; }

    public int Tokens { get; }

    public int QueryHeads { get; }

    public int KeyValueHeads { get; }

    /// <summary>U: ranks that share a ring shard and split its heads (1 for ring layouts).</summary>
    public int UlyssesDegree { get; }

    /// <summary>R: ranks a KV block travels around (1 for pure Ulysses).</summary>
    public int RingDegree { get; }

    /// <summary>Token offsets (ascending) of ring shard <paramref name="ring"/>: the queries it answers and the keys it holds.</summary>
    public ReadOnlySpan<long> RingShardTokens(int ring) => _ringShards[ring];

    /// <summary>Token offsets (ascending) that rank <paramref name="rank"/> receives as input and returns as output.</summary>
    public ReadOnlySpan<long> RankTokens(int rank) => _rankTokens[rank];

    /// <summary><see cref="RankTokens"/> as memory, for a rank's view of the chunk, which outlives a stack frame.</summary>
    internal ReadOnlyMemory<long> RankTokenOffsets(int rank) => _rankTokens[rank];

    public int RingOf(int rank) => rank / UlyssesDegree;

    public int MemberOf(int rank) => rank % UlyssesDegree;

    public int RankAt(int ring, int member) => (ring * UlyssesDegree) + member;

    /// <summary>Query heads [First, First + Count) of Ulysses member u.</summary>
    public (int First, int Count) QueryHeadsOf(int member)
    {
        int count = QueryHeads / UlyssesDegree;
        return (member * count, count);
    }

    /// <summary>KV heads [First, First + Count) that the query heads of member u read.</summary>
    public (int First, int Count) KeyValueHeadsOf(int member)
    {
        int group = QueryHeads / KeyValueHeads;
        (int first, int count) = QueryHeadsOf(member);
        int kvFirst = first / group;
        int kvLast = (first + count - 1) / group;
        return (kvFirst, kvLast - kvFirst + 1);
    }

    private static void ValidateHeads(ContextLayout layout, int degree, int hq, int hkv)
    {
        if (hq < 1 || hkv < 1 || hq % hkv != 0)
        {
            throw new ArgumentException($"query heads ({hq}) must be a positive multiple of KV heads ({hkv})", nameof(hq));
        }

        if (degree == 1)
        {
            return;
        }

        if (hq % degree != 0)
        {
            throw new ArgumentException($"layout {layout}: the Ulysses degree {degree} must divide the query heads ({hq})", nameof(hq));
        }

        if (hkv % degree != 0 && degree % hkv != 0)
        {
            throw new ArgumentException(
                $"layout {layout}: the Ulysses degree {degree} must divide the KV heads ({hkv}) or be a multiple of them (then KV heads are replicated)", nameof(hkv));
        }
    }

    private static long[] RingShard(ContextLayout layout, int ring, int tokens, int index)
    {
        var result = new List<long>((tokens / ring) + 1);
        switch (layout.Kind)
        {
            case LayoutKind.Striped:
                for (long t = 0; t < tokens; t++)
                {
                    if ((t / layout.StripeWidth) % ring == index)
                    {
                        result.Add(t);
                    }
                }

                break;
            case LayoutKind.Zigzag:
            case LayoutKind.Hybrid:
                AddRange(result, Boundary(tokens, 2 * ring, index), Boundary(tokens, 2 * ring, index + 1));
                AddRange(result, Boundary(tokens, 2 * ring, (2 * ring) - 1 - index), Boundary(tokens, 2 * ring, 2 * ring - index));
                break;
            default:
                AddRange(result, Boundary(tokens, ring, index), Boundary(tokens, ring, index + 1));
                break;
        }

        return result.ToArray();
    }

    private static long Boundary(int tokens, int parts, int index) => (long)tokens * index / parts;

    private static void AddRange(List<long> list, long start, long end)
    {
        for (long t = start; t < end; t++)
        {
            list.Add(t);
        }
    }
}
