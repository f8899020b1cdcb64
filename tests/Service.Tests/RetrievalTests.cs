using System.Net.Http.Headers;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Grains.Memory;
using LongCluster.Grains.Status;
using LongCluster.Kernels;
using LongCluster.Tensors;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service.Tests;

/// <summary>
/// Retrieval sequences on a 3-silo cluster: the shard keeps init and the local window, evicted blocks live in memory
/// grains on every silo. Small blocks and windows, so a few hundred tokens evict tens of blocks and select among them.
/// </summary>
public sealed class RetrievalTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private const string Mask = "retrieval:block=8,repr=2,topk=3,init=4,local=16,chunk=12";

    private static readonly RetrievalRule s_rule = RetrievalRule.Parse(Mask);

    private static readonly SequenceSpec s_spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16, Mask = Mask };

    [Fact]
    public async Task Prefill_ThreeSilos_EqualsOneNodeAndReference_RerunGivesSameBits()
    {
        const int tokens = 200;
        var layers = Enumerable.Range(0, s_spec.Layers).Select(l => Layer<float>(s_spec, tokens, 100 + (10 * l), x => x)).ToArray();
        IReadOnlyList<LayerOutput> first = await PrefillAsync(fixture.Client, s_spec, "retrieval-a", layers, [tokens]);
        IReadOnlyList<LayerOutput> again = await PrefillAsync(fixture.Client, s_spec, "retrieval-b", layers, [tokens]);
        for (int l = 0; l < s_spec.Layers; l++)
        {
            (float[] o, float[] lse) = OneNode(s_spec, layers[l], tokens, []);
            Data.Equal(o, first[l].Output, 1e-6, $"layer {l} O vs one node");
            Data.Equal(lse, first[l].LogSumExp, 1e-6, $"layer {l} LSE vs one node");
            (double[] refO, double[] refLse) = RetrievalReference.Forward<float>(layers[l].Q, layers[l].K, layers[l].V, Shape(s_spec, tokens), s_rule);
            Data.Equal([.. refO.Select(x => (float)x)], first[l].Output, 1e-5, $"layer {l} O vs float64 reference");
            Data.Equal([.. refLse.Select(x => (float)x)], first[l].LogSumExp, 1e-5, $"layer {l} LSE vs float64 reference");
            Assert.Equal(first[l].Output, again[l].Output);
            Assert.Equal(first[l].LogSumExp, again[l].LogSumExp);
        }

        SequenceInfo info = await fixture.Client.GetSequenceAsync("retrieval-a");
        Assert.Equal(1, info.Shards);
        Assert.Equal(s_rule.ToString(), info.Spec.Mask);
        Assert.True(Held(fixture.Cluster).Resident > 0, "the evicted blocks are held in the silos' memory tiers");
        await fixture.Client.DeleteSequenceAsync("retrieval-a");
        await fixture.Client.DeleteSequenceAsync("retrieval-b");
        Assert.Equal((0L, 0L, 0), Held(fixture.Cluster));
    }

    [Fact]
    public async Task PrefillInRequestsThenDecode_Bf16_EqualsRuleWithSameRequestBoundaries()
    {
        int[] requests = [50, 37, 60];
        const int decoded = 20;
        int tokens = requests.Sum() + decoded;
        SequenceSpec spec = s_spec with { DType = "bf16" };
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Layer(spec, tokens, 300 + (10 * l), x => (BFloat16)x)).ToArray();
        int[] boundaries = [.. requests, .. Enumerable.Repeat(1, decoded)];
        var expected = layers.Select(layer => OneNode(spec, layer, tokens, boundaries)).ToArray();
        int o = spec.QueryHeads * spec.HeadDim;

        await fixture.Client.CreateSequenceAsync(spec, "retrieval-requests");
        int start = 0;
        foreach (int count in requests)
        {
            int first = start;
            IReadOnlyList<LayerOutput> outputs = await fixture.Client.PrefillAsync("retrieval-requests", count, (l, _) => Input(spec, layers[l], first, count));
            for (int l = 0; l < spec.Layers; l++)
            {
                Data.Equal(expected[l].O.AsSpan(first * o, count * o), outputs[l].Output, 1e-6, $"request at {first}, layer {l} O");
                Data.Equal(expected[l].Lse.AsSpan(first * spec.QueryHeads, count * spec.QueryHeads), outputs[l].LogSumExp, 1e-6, $"request at {first}, layer {l} LSE");
            }

            start += count;
        }

        for (int t = start; t < tokens; t++)
        {
            for (int l = 0; l < spec.Layers; l++)
            {
                LayerInput row = Input(spec, layers[l], t, 1);
                DecodeOutput result = await fixture.Client.DecodeAsync("retrieval-requests", l, row.Query, row.Key, row.Value);
                Assert.Equal(t, result.Position);
                Data.Equal(expected[l].O.AsSpan(t * o, o), result.Output, 1e-6, $"decode {t}, layer {l} O");
                Data.Equal(expected[l].Lse.AsSpan(t * spec.QueryHeads, spec.QueryHeads), result.LogSumExp, 1e-6, $"decode {t}, layer {l} LSE");
            }
        }

        (double[] refO, _) = RetrievalReference.Forward<BFloat16>(layers[0].Q, layers[0].K, layers[0].V, Shape(spec, tokens), s_rule, boundaries);
        Data.Equal([.. refO.Select(x => (float)x)], expected[0].O, 1e-5, "one node vs float64 reference");
        await fixture.Client.DeleteSequenceAsync("retrieval-requests");
    }

    [Fact]
    public async Task SpillEveryBlock_SameBitsAsInMemory_DeleteFreesEveryByteAndFile()
    {
        const int tokens = 160;
        var layers = Enumerable.Range(0, s_spec.Layers).Select(l => Layer<float>(s_spec, tokens, 500 + (10 * l), x => x)).ToArray();
        IReadOnlyList<LayerOutput> inMemory = await PrefillAsync(fixture.Client, s_spec, "retrieval-resident", layers, [100, 60]);
        await fixture.Client.DeleteSequenceAsync("retrieval-resident");

        string folder = Path.Combine(Path.GetTempPath(), $"longcluster-spill-test-{Guid.NewGuid():N}");
        try
        {
            await using LocalAttentionCluster spilling = await LocalAttentionCluster.StartAsync(3, o =>
            {
                o.MemoryBudgetBytes = 0;
                o.MemorySpillDirectory = folder;
            });
            using LongClusterClient client = spilling.NewClient();
            IReadOnlyList<LayerOutput> spilled = await PrefillAsync(client, s_spec, "retrieval-spilled", layers, [100, 60]);
            for (int l = 0; l < s_spec.Layers; l++)
            {
                Assert.Equal(inMemory[l].Output, spilled[l].Output);
                Assert.Equal(inMemory[l].LogSumExp, spilled[l].LogSumExp);
            }

            (long resident, long spilledBytes, int files) = Held(spilling);
            // Every evicted block: its K and V in a file, only its key sums (Hkv · d floats) in memory.
            int evicted = s_rule.EvictedBlocks(100 + 48, s_rule.BlockCount(tokens));
            long blockBytes = (long)s_rule.Block * s_spec.KeyValueHeads * s_spec.HeadDim * sizeof(float);
            Assert.Equal((long)s_spec.Layers * evicted * s_spec.KeyValueHeads * s_spec.HeadDim * sizeof(float), resident);
            Assert.Equal(s_spec.Layers * evicted * 2 * blockBytes, spilledBytes);
            Assert.Equal(s_spec.Layers * evicted, files);
            Assert.Equal(files, Directory.GetFiles(folder, "*.kv", SearchOption.AllDirectories).Length);
            await AssertReportedAsync(spilling);

            await client.DeleteSequenceAsync("retrieval-spilled");
            Assert.Equal((0L, 0L, 0), Held(spilling));
            Assert.Empty(Directory.GetFiles(folder, "*.kv", SearchOption.AllDirectories));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void MemoryTier_StaleFolder_RemovedAtStartUp_LiveOnesKept()
    {
        string root = Path.Combine(Path.GetTempPath(), $"longcluster-stale-test-{Guid.NewGuid():N}");
        try
        {
            string stale = Path.Combine(root, "crashed-silo");
            Directory.CreateDirectory(stale);
            File.WriteAllBytes(Path.Combine(stale, "7.kv"), new byte[64]);
            var options = new AttentionServiceOptions { MemorySpillDirectory = root };
            using var live = new MemoryTier(options);
            Assert.False(Directory.Exists(stale));
            using var next = new MemoryTier(options);
            Assert.True(Directory.Exists(live.Folder), "a live silo's folder survives another silo's start-up");
            Assert.True(Directory.Exists(next.Folder));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public async Task MemoryTier_SilosStartingTogether_RemoveStaleFoldersWithoutTrippingOverEachOther()
    {
        // Silos started at once on one machine (a local cluster, tests in parallel) share the spill root: one may find
        // a stale folder's claim free just after another removed the folder (seen in CI as DirectoryNotFoundException).
        string root = Path.Combine(Path.GetTempPath(), $"longcluster-stale-race-{Guid.NewGuid():N}");
        try
        {
            for (int round = 0; round < 5; round++)
            {
                for (int i = 0; i < 300; i++)
                {
                    Directory.CreateDirectory(Path.Combine(root, $"crashed-{round}-{i}"));
                }

                var options = new AttentionServiceOptions { MemorySpillDirectory = root };
                using var start = new Barrier(4);
                MemoryTier[] tiers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
                {
                    start.SignalAndWait();
                    return new MemoryTier(options);
                })));
                Assert.Equal(tiers.Select(t => t.Folder).Order(), Directory.GetDirectories(root).Order());
                foreach (MemoryTier tier in tiers)
                {
                    tier.Dispose();
                }
            }
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Theory]
    [InlineData(2, "retrieval", "shards")]
    [InlineData(1, "retrieval:block=0", "mask")]
    [InlineData(0, "retrieval:repr=9,block=8", "mask")]
    [InlineData(0, "retrieval:width=3", "mask")]
    public async Task Create_BadRetrievalSpec_RefusedNamingTheField(int shards, string mask, string field)
    {
        LongClusterException e = await Assert.ThrowsAsync<LongClusterException>(() =>
            fixture.Client.CreateSequenceAsync(s_spec with { Shards = shards, Mask = mask }, "retrieval-bad"));
        Assert.Equal((400, field), (e.Status, e.Field));
    }

    [Fact]
    public void Options_BadMemorySettings_RefusedNamingTheSetting()
    {
        var negative = new AttentionServiceOptions { ApiToken = "0123456789abcdef", MemoryBudgetBytes = -1 };
        Assert.Contains("MemoryBudgetBytes", Assert.Throws<ArgumentException>(negative.Validate).Message, StringComparison.Ordinal);
        var empty = new AttentionServiceOptions { ApiToken = "0123456789abcdef", MemorySpillDirectory = " " };
        Assert.Contains("MemorySpillDirectory", Assert.Throws<ArgumentException>(empty.Validate).Message, StringComparison.Ordinal);
    }

    internal static (T[] Q, T[] K, T[] V) Layer<T>(SequenceSpec spec, int tokens, int seed, Func<float, T> convert)
    {
        (float[] q, float[] k, float[] v) = Data.Layer(spec, tokens, seed);
        return ([.. q.Select(convert)], [.. k.Select(convert)], [.. v.Select(convert)]);
    }

    internal static LayerInput Input<T>(SequenceSpec spec, (T[] Q, T[] K, T[] V) layer, int start, int count)
        where T : unmanaged
    {
        int q = spec.QueryHeads * spec.HeadDim;
        int kv = spec.KeyValueHeads * spec.HeadDim;
        return new LayerInput(
            HostTensor.From<T>(layer.Q.AsSpan(start * q, count * q), count, spec.QueryHeads, spec.HeadDim),
            HostTensor.From<T>(layer.K.AsSpan(start * kv, count * kv), count, spec.KeyValueHeads, spec.HeadDim),
            HostTensor.From<T>(layer.V.AsSpan(start * kv, count * kv), count, spec.KeyValueHeads, spec.HeadDim));
    }

    /// <summary>Creates a sequence and prefills it in requests of <paramref name="requests"/> rows; every layer's O and LSE over all of them.</summary>
    internal static async Task<IReadOnlyList<LayerOutput>> PrefillAsync<T>(LongClusterClient client, SequenceSpec spec, string id, (T[] Q, T[] K, T[] V)[] layers, int[] requests)
        where T : unmanaged
    {
        await client.CreateSequenceAsync(spec, id);
        int start = 0;
        var o = layers.Select(_ => new List<float>()).ToArray();
        var lse = layers.Select(_ => new List<float>()).ToArray();
        foreach (int count in requests)
        {
            int first = start;
            IReadOnlyList<LayerOutput> chunk = await client.PrefillAsync(id, count, (l, _) => Input(spec, layers[l], first, count));
            for (int l = 0; l < spec.Layers; l++)
            {
                o[l].AddRange(chunk[l].Output);
                lse[l].AddRange(chunk[l].LogSumExp);
            }

            start += count;
        }

        return [.. Enumerable.Range(0, spec.Layers).Select(l => new LayerOutput([.. o[l]], [.. lse[l]], null!))];
    }

    /// <summary>The rule on one node (<see cref="RetrievalAttention.Forward{T}"/>) over the whole sequence, with the same request boundaries.</summary>
    private static (float[] O, float[] Lse) OneNode<T>(SequenceSpec spec, (T[] Q, T[] K, T[] V) layer, int tokens, int[] requests)
        where T : unmanaged
    {
        var o = new float[tokens * spec.QueryHeads * spec.HeadDim];
        var lse = new float[tokens * spec.QueryHeads];
        RetrievalAttention.Forward<T>(layer.Q, layer.K, layer.V, Shape(spec, tokens), s_rule, requests, o, lse);
        return (o, lse);
    }

    private static AttentionShape Shape(SequenceSpec spec, int tokens) => new(tokens, tokens, spec.QueryHeads, spec.KeyValueHeads, spec.HeadDim);

    /// <summary>Every silo's memory tier bytes (resident, spilled) as its metrics and its status report give them.</summary>
    private static async Task AssertReportedAsync(LocalAttentionCluster cluster)
    {
        using var http = new HttpClient { BaseAddress = cluster.Endpoints[0] };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", cluster.ApiToken);
        string metrics = await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
        ClusterStatus status = JsonSerializer.Deserialize<ClusterStatus>(
            await http.GetStringAsync(new Uri("/status.json", UriKind.Relative)), new JsonSerializerOptions(JsonSerializerDefaults.Web))!;
        foreach (LocalSilo silo in cluster.Silos)
        {
            MemoryTier tier = silo.Services.GetRequiredService<MemoryTier>();
            Assert.Equal(tier.ResidentBytes, TelemetryTests.Sum(metrics, "longcluster_memory_resident_bytes", $"silo=\"{silo.Address}\""));
            Assert.Equal(tier.SpilledBytes, TelemetryTests.Sum(metrics, "longcluster_memory_spilled_bytes", $"silo=\"{silo.Address}\""));
            SiloReport report = status.Silos.Single(s => s.Address == silo.Address).Report!;
            Assert.Equal((tier.ResidentBytes, tier.SpilledBytes), (report.MemoryResidentBytes, report.MemorySpilledBytes));
        }
    }

    /// <summary>Bytes in memory, bytes spilled and spill files, over every silo's memory tier.</summary>
    internal static (long Resident, long Spilled, int Files) Held(LocalAttentionCluster cluster)
    {
        MemoryTier[] tiers = [.. cluster.Silos.Select(s => s.Services.GetRequiredService<MemoryTier>())];
        return (tiers.Sum(t => t.ResidentBytes), tiers.Sum(t => t.SpilledBytes), tiers.Sum(t => t.SpillFiles));
    }
}
