namespace LongCluster.Cli;

/// <summary>
/// One point of <c>longcluster bench scaling</c> as a cost model needs it: the shape, the layout, the silos and the
/// cores and link each has. What was measured is not part of it, so a prediction cannot lean on the measurement.
/// </summary>
/// <param name="Silos">Silo processes P, one shard each.</param>
/// <param name="Layout">The layout as the service spells it (<c>zigzag</c>, <c>striped</c>, <c>hybrid:2</c>).</param>
/// <param name="Tokens">Tokens of the one prefill chunk (queries and keys alike).</param>
/// <param name="QueryHeads">Hq.</param>
/// <param name="KeyValueHeads">Hkv.</param>
/// <param name="HeadDim">d.</param>
/// <param name="DType">Storage dtype of Q, K and V: f32, f16 or bf16.</param>
/// <param name="Mask">The mask as the service spells it (<c>causal</c>).</param>
/// <param name="ThreadsPerSilo">Kernel threads of each silo (<c>Service:KernelThreads</c>): its share of the cores.</param>
/// <param name="SharesCores">Whether silos outnumber the cores, so that some share one (then the kernel threads of two silos contend).</param>
/// <param name="LinkBitsPerSecond">Rate each silo sends at, bits/s; null on loopback (unshaped).</param>
/// <param name="LinkLatencyMicroseconds">One-way delay added to each packet, µs, as applied (0 where the kernel could not delay packets); null on loopback.</param>
/// <param name="HostCores">Cores of this host the silos split (the harness's allowed cores).</param>
/// <param name="CoresOfShard">
/// Shard i's silo's pinned cores (0..<paramref name="HostCores"/>−1), from where the service placed the shards; null where
/// the silos are not pinned. Placement, not a measurement: shards of one sequence follow a hash of its id.
/// </param>
internal sealed record ScalingPoint(
    int Silos,
    string Layout,
    int Tokens,
    int QueryHeads,
    int KeyValueHeads,
    int HeadDim,
    string DType,
    string Mask,
    int ThreadsPerSilo,
    bool SharesCores,
    double? LinkBitsPerSecond,
    double? LinkLatencyMicroseconds,
    int HostCores,
    IReadOnlyList<int[]>? CoresOfShard);
