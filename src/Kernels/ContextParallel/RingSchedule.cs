namespace LongCluster.Kernels.ContextParallel;

/// <summary>
/// The work and traffic of one chunk under a layout and mask, computed from positions alone (no tensors). At ring
/// step s, ring shard i holds the KV block that started on shard (i − s) mod R. Work counts live (query, key)
/// pairs times the query heads a rank computes; a step takes as long as its slowest rank, so the load imbalance is
/// Σ_steps max_rank(work) / Σ_steps mean_rank(work) (1 is perfect).
/// </summary>
public sealed class RingSchedule
{
    private readonly long[,] _livePairs;
    private readonly int[,] _liveTiles;

    private RingSchedule(LayoutPlan plan, long[,] livePairs, int[,] liveTiles, long[] bytesSent)
    {
        Plan = plan;
        _livePairs = livePairs;
        _liveTiles = liveTiles;
        BytesSent = bytesSent;
        long heads = plan.QueryHeads / plan.UlyssesDegree;
        double sumMax = 0;
        double sumMean = 0;
        for (int s = 0; s < Steps; s++)
        {
            long max = 0;
            long total = 0;
            for (int i = 0; i < plan.RingDegree; i++)
            {
                max = Math.Max(max, livePairs[s, i] * heads);
                total += livePairs[s, i] * heads;
            }

            sumMax += max;
            sumMean += (double)total / plan.RingDegree;
        }

        Imbalance = sumMean == 0 ? 1 : sumMax / sumMean;
        TotalWork = (long)Math.Round(sumMean * plan.RingDegree * plan.UlyssesDegree);
        CriticalPathWork = (long)sumMax;
    }

    public LayoutPlan Plan { get; }

    public int Steps => Plan.RingDegree;

    /// <summary>Σ_steps max / Σ_steps mean of the per-rank work.</summary>
    public double Imbalance { get; }

    /// <summary>Live pairs × heads over all ranks and steps: the whole job.</summary>
    public long TotalWork { get; }

    /// <summary>Σ_steps of the slowest rank's work: what bounds the wall time.</summary>
    public long CriticalPathWork { get; }

    /// <summary>Bytes each rank sends for the chunk (ring blocks and all-to-all slices), indexed by rank.</summary>
    public IReadOnlyList<long> BytesSent { get; }

    /// <summary>The ring shard whose KV block ring shard <paramref name="ring"/> holds at <paramref name="step"/>.</summary>
    public int BlockSource(int ring, int step) => (((ring - step) % Plan.RingDegree) + Plan.RingDegree) % Plan.RingDegree;

    /// <summary>Visible (query, key) pairs of ring shard <paramref name="ring"/> at <paramref name="step"/>, per head.</summary>
    public long LivePairs(int step, int ring) => _livePairs[step, ring];

    /// <summary>Kernel tiles (64 queries × 64 keys, in shard order) that are not wholly hidden; 0 means the block is skipped.</summary>
    public int LiveTiles(int step, int ring) => _liveTiles[step, ring];

    /// <summary>Work (live pairs × query heads) of rank <paramref name="rank"/> at <paramref name="step"/>.</summary>
    public long Work(int step, int rank) => _livePairs[step, Plan.RingOf(rank)] * (Plan.QueryHeads / Plan.UlyssesDegree);

    /// <param name="elementSize">Bytes per K/V/Q element (4 for f32, 2 for f16/bf16).</param>
    /// <param name="documentLength">Tokens per document for document masks (documents are consecutive runs).</param>
    public static RingSchedule Create(LayoutPlan plan, AttentionMask mask, int headDim, int elementSize, int documentLength = 0)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (mask.Document && documentLength < 1)
        {
            throw new ArgumentException($"mask {mask} needs a document length >= 1", nameof(documentLength));
        }

        int ring = plan.RingDegree;
        long[][] positions = new long[ring][];
        int[][] documents = new int[ring][];
        TileRange[][] tiles = new TileRange[ring][];
        for (int i = 0; i < ring; i++)
        {
            positions[i] = plan.RingShardTokens(i).ToArray();
            documents[i] = mask.Document ? positions[i].Select(p => (int)(p / documentLength)).ToArray() : [];
            tiles[i] = Tiles(positions[i], documents[i], mask.Document);
        }

        // Every cell is independent of the others, so the steps run in parallel and the result is the same: a cost
        // model sweeping 1..1024 shards builds schedules of up to a million cells.
        var livePairs = new long[ring, ring];
        var liveTiles = new int[ring, ring];
        Parallel.For(0, ring, s =>
        {
            for (int i = 0; i < ring; i++)
            {
                int source = (((i - s) % ring) + ring) % ring;
                livePairs[s, i] = mask.CountLivePairs(positions[i], positions[source], documents[i], documents[source]);
                liveTiles[s, i] = CountLiveTiles(mask, tiles[i], tiles[source]);
            }
        });

        return new RingSchedule(plan, livePairs, liveTiles, Traffic(plan, headDim, elementSize, mask.Document));
    }

    /// <summary>The ranges of a shard's kernel tiles (<see cref="Attention.KeyTile"/> rows each, in shard order): its query tiles and its key tiles alike.</summary>
    private static TileRange[] Tiles(long[] positions, int[] documents, bool useDocuments)
    {
        const int Tile = Attention.KeyTile;
        var tiles = new TileRange[(positions.Length + Tile - 1) / Tile];
        for (int t = 0; t < tiles.Length; t++)
        {
            int start = t * Tile;
            int n = Math.Min(Tile, positions.Length - start);
            tiles[t] = TileRange.Of(positions.AsSpan(start, n), useDocuments ? documents.AsSpan(start, n) : default);
        }

        return tiles;
    }

    private static int CountLiveTiles(AttentionMask mask, TileRange[] queries, TileRange[] keys)
    {
        int count = 0;
        foreach (TileRange q in queries)
        {
            foreach (TileRange k in keys)
            {
                if (mask.Classify(q, k) != TileVisibility.Hidden)
                {
                    count++;
                }
            }
        }

        return count;
    }

    private static long[] Traffic(LayoutPlan plan, int headDim, int elementSize, bool documents)
    {
        long metadata = sizeof(long) + (documents ? sizeof(int) : 0);
        var bytes = new long[plan.Shards];
        for (int rank = 0; rank < plan.Shards; rank++)
        {
            int ring = plan.RingOf(rank);
            (_, int kvHeads) = plan.KeyValueHeadsOf(plan.MemberOf(rank));
            UlyssesTraffic ulysses = Ulysses(plan, rank, headDim, elementSize, metadata);
            bytes[rank] += ulysses.ScatterSent + ulysses.GatherSent;
            for (int s = 0; s < plan.RingDegree - 1; s++)
            {
                int source = (((ring - s) % plan.RingDegree) + plan.RingDegree) % plan.RingDegree;
                long rows = plan.RingShardTokens(source).Length;
                bytes[rank] += rows * ((2L * kvHeads * headDim * elementSize) + metadata);
            }
        }

        return bytes;
    }

    /// <summary>
    /// Bytes <paramref name="rank"/> sends and receives in the Ulysses all-to-alls of one layer, as the driver sends
    /// them: the scatter (its rows' Q, K, V of the heads each other member owns, each row with its
    /// <paramref name="metadata"/>: position, document) and the gather (O and LSE, f32, of its heads for the other
    /// members' rows). Zero without Ulysses.
    /// </summary>
    public static UlyssesTraffic Ulysses(LayoutPlan plan, int rank, int headDim, int elementSize, long metadata)
    {
        ArgumentNullException.ThrowIfNull(plan);
        int member = plan.MemberOf(rank);
        int ring = plan.RingOf(rank);
        long own = plan.RankTokens(rank).Length;
        (_, int qHeads) = plan.QueryHeadsOf(member);
        (_, int kvHeads) = plan.KeyValueHeadsOf(member);
        var traffic = default(UlyssesTraffic);
        for (int m = 0; m < plan.UlyssesDegree; m++)
        {
            if (m == member)
            {
                continue;
            }

            (_, int mq) = plan.QueryHeadsOf(m);
            (_, int mkv) = plan.KeyValueHeadsOf(m);
            long theirs = plan.RankTokens(plan.RankAt(ring, m)).Length;
            traffic = new UlyssesTraffic(
                traffic.ScatterSent + (own * ((((long)mq + (2L * mkv)) * headDim * elementSize) + metadata)),
                traffic.ScatterReceived + (theirs * ((((long)qHeads + (2L * kvHeads)) * headDim * elementSize) + metadata)),
                traffic.GatherSent + (theirs * qHeads * (headDim + 1L) * sizeof(float)),
                traffic.GatherReceived + (own * mq * (headDim + 1L) * sizeof(float)));
        }

        return traffic;
    }
}

/// <summary>One rank's bytes in a layer's Ulysses all-to-alls: the scatter of Q, K, V and the gather of O and LSE, each way.</summary>
public readonly record struct UlyssesTraffic(long ScatterSent, long ScatterReceived, long GatherSent, long GatherReceived);
