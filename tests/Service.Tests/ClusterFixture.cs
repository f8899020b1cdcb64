using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains.Exchange;
using LongCluster.Kernels;
using LongCluster.Tensors;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Configuration;

namespace LongCluster.Service.Tests;

/// <summary>One 3-silo in-process cluster with the attention service, shared by the tests of a class; its sends can be failed on purpose.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    public LocalAttentionCluster Cluster { get; private set; } = null!;

    public LongClusterClient Client { get; private set; } = null!;

    public SendFaults Faults { get; } = new();

    /// <summary>The cluster's read-only token: it opens the status page, never the <c>/v1</c> API.</summary>
    public string StatusToken { get; } = "read-only status token for tests";

    public async Task InitializeAsync()
    {
        Cluster = await LocalAttentionCluster.StartAsync(
            3,
            o =>
            {
                o.ReceiveTimeout = TimeSpan.FromSeconds(20);
                o.MaxRequestBytes = 4 * 1024 * 1024;
                o.MaxTokensPerSequence = 1_000_000;
                o.StatusToken = StatusToken;
            },
            silo => silo.InjectFaults(Faults));
        Client = Cluster.NewClient();
    }

    public async Task DisposeAsync()
    {
        Client.Dispose();
        await Cluster.DisposeAsync();
    }
}

/// <summary>Test wiring of a silo.</summary>
internal static class TestSilo
{
    /// <summary>Wraps the silo's exchange in <see cref="FaultyExchangeFactory"/>, driven by <paramref name="faults"/>.</summary>
    public static ISiloBuilder InjectFaults(this ISiloBuilder silo, SendFaults faults)
    {
        silo.Services.AddSingleton<IRunExchangeFactory>(s => new FaultyExchangeFactory(s.GetRequiredService<ExchangeHub>(), faults));
        return silo;
    }

    /// <summary>Failure detection in about a second instead of Orleans' tens of seconds.</summary>
    public static ISiloBuilder DetectFailuresFast(this ISiloBuilder silo) => silo.Configure<ClusterMembershipOptions>(o =>
    {
        o.ProbeTimeout = TimeSpan.FromMilliseconds(500);
        o.MinProbeTimeout = TimeSpan.FromMilliseconds(500);
        o.NumMissedProbesLimit = 2;
        o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
        o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(1);
    });
}

/// <summary>Seeded inputs and the single-node kernel they are checked against.</summary>
internal static class Data
{
    public static LongClusterClient NewClient(this LocalAttentionCluster cluster, int retries = 3) => new(new LongClusterClientOptions
    {
        Endpoints = cluster.Endpoints,
        Token = cluster.ApiToken,
        MaxRetries = retries,
        RetryDelay = TimeSpan.FromMilliseconds(50),
        RequestTimeout = TimeSpan.FromMinutes(2),
    });

    public static float[] Random(int seed, long count)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (long i = 0; i < count; i++)
        {
            values[i] = (float)((random.NextDouble() * 2) - 1);
        }

        return values;
    }

    /// <summary>Q, K, V of one layer of <paramref name="tokens"/> tokens (the whole sequence, to slice chunks from).</summary>
    public static (float[] Q, float[] K, float[] V) Layer(SequenceSpec spec, int tokens, int seed) => (
        Random(seed, (long)tokens * spec.QueryHeads * spec.HeadDim),
        Random(seed + 1, (long)tokens * spec.KeyValueHeads * spec.HeadDim),
        Random(seed + 2, (long)tokens * spec.KeyValueHeads * spec.HeadDim));

    public static LayerInput Input(SequenceSpec spec, (float[] Q, float[] K, float[] V) layer, int start, int count)
    {
        int q = spec.QueryHeads * spec.HeadDim;
        int kv = spec.KeyValueHeads * spec.HeadDim;
        return new LayerInput(
            HostTensor.From<float>(layer.Q.AsSpan(start * q, count * q), count, spec.QueryHeads, spec.HeadDim),
            HostTensor.From<float>(layer.K.AsSpan(start * kv, count * kv), count, spec.KeyValueHeads, spec.HeadDim),
            HostTensor.From<float>(layer.V.AsSpan(start * kv, count * kv), count, spec.KeyValueHeads, spec.HeadDim));
    }

    /// <summary>The single-node kernel over the whole sequence: O and LSE of every token.</summary>
    public static (float[] O, float[] Lse) Kernel(SequenceSpec spec, (float[] Q, float[] K, float[] V) layer, int tokens, int[]? documents = null)
    {
        var o = new float[tokens * spec.QueryHeads * spec.HeadDim];
        var lse = new float[tokens * spec.QueryHeads];
        long[] positions = [.. Enumerable.Range(0, tokens).Select(i => (long)i)];
        Attention.Forward<float>(
            layer.Q, layer.K, layer.V, new AttentionShape(tokens, tokens, spec.QueryHeads, spec.KeyValueHeads, spec.HeadDim), AttentionMask.Parse(spec.Mask),
            new AttentionTokens(positions, positions, documents ?? default, documents ?? default), o, lse);
        return (o, lse);
    }

    /// <summary>
    /// Prefills <paramref name="chunks"/> (token counts, in order) of an existing sequence, then decodes
    /// <paramref name="decoded"/> tokens one at a time on every layer, asserting each chunk's and each step's O and LSE
    /// equal the single-node kernel over the whole sequence (1e-4).
    /// </summary>
    public static async Task PrefillThenDecodeEqualKernel(
        LongClusterClient client, string id, SequenceSpec spec, (float[] Q, float[] K, float[] V)[] layers, int[] chunks, int decoded, int[]? documents = null)
    {
        int tokens = chunks.Sum() + decoded;
        var expected = layers.Select(layer => Kernel(spec, layer, tokens, documents)).ToArray();
        int o = spec.QueryHeads * spec.HeadDim;
        int start = 0;
        foreach (int count in chunks)
        {
            int first = start;
            IReadOnlyList<LayerOutput> outputs = await client.PrefillAsync(id, count, (l, _) => Input(spec, layers[l], first, count), documents?[first..(first + count)]);
            for (int l = 0; l < spec.Layers; l++)
            {
                Equal(expected[l].O.AsSpan(first * o, count * o), outputs[l].Output, 1e-4, $"chunk at {first}, layer {l} O");
                Equal(expected[l].Lse.AsSpan(first * spec.QueryHeads, count * spec.QueryHeads), outputs[l].LogSumExp, 1e-4, $"chunk at {first}, layer {l} LSE");
            }

            start += count;
        }

        for (int t = start; t < tokens; t++)
        {
            for (int l = 0; l < spec.Layers; l++)
            {
                LayerInput row = Input(spec, layers[l], t, 1);
                DecodeOutput result = await client.DecodeAsync(id, l, row.Query, row.Key, row.Value, documents?[t]);
                Assert.Equal(t, result.Position);
                Equal(expected[l].O.AsSpan(t * o, o), result.Output, 1e-4, $"decode {t}, layer {l} O");
                Equal(expected[l].Lse.AsSpan(t * spec.QueryHeads, spec.QueryHeads), result.LogSumExp, 1e-4, $"decode {t}, layer {l} LSE");
            }
        }
    }

    /// <summary>Asserts every layer's O and LSE equal the single-node kernel over the same <paramref name="tokens"/> tokens.</summary>
    public static void EqualKernel(SequenceSpec spec, (float[] Q, float[] K, float[] V)[] layers, IReadOnlyList<LayerOutput> outputs, int tokens, string what)
    {
        for (int l = 0; l < spec.Layers; l++)
        {
            (float[] o, float[] lse) = Kernel(spec, layers[l], tokens);
            Equal(o, outputs[l].Output, 1e-4, $"layer {l} O {what}");
            Equal(lse, outputs[l].LogSumExp, 1e-4, $"layer {l} LSE {what}");
        }
    }

    /// <summary>Asserts a slice of expected rows equals actual to a relative tolerance (−∞ LSE where no key is visible).</summary>
    public static void Equal(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNegativeInfinity(expected[i]))
            {
                Assert.True(float.IsNegativeInfinity(actual[i]), $"{what}[{i}]: expected -inf, got {actual[i]}");
                continue;
            }

            double error = Math.Abs(expected[i] - actual[i]) / Math.Max(1.0, Math.Abs(expected[i]));
            Assert.True(error <= tolerance, $"{what}[{i}]: expected {expected[i]}, got {actual[i]} (relative error {error:e2})");
        }
    }
}
