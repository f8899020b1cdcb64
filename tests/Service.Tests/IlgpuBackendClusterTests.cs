using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;

namespace LongCluster.Service.Tests;

/// <summary>
/// Silos with <c>Service:KernelBackend = ilgpu</c>: with no CUDA device here the shards' kernels run on ILGPU's CPU
/// accelerator — the same ILGPU kernels a GPU silo runs —, the KV segments are kept in the backend's device memory,
/// and the sequence computes what the single-node CPU kernel does.
/// </summary>
public sealed class IlgpuBackendClusterTests
{
    [Fact]
    public async Task ChunksThenDecode_IlgpuSilos_EqualCpuKernel_KeptCopiesFreedOnDelete()
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(2, o => o.KernelBackend = "ilgpu");
        Assert.All(cluster.Silos, s => Assert.StartsWith("ilgpu-", s.Resources.Backend.Name, StringComparison.Ordinal));
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16, Layout = "zigzag", Mask = "causal", Shards = 2 };
        int[] chunks = [37, 20];
        const int Decoded = 3;
        int tokens = chunks.Sum() + Decoded;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, tokens, 11 + (100 * l))).ToArray();
        using var client = new LongClusterClient(new LongClusterClientOptions { Endpoints = cluster.Endpoints, Token = cluster.ApiToken });
        const string Id = "ilgpu-silos";
        await client.CreateSequenceAsync(spec, Id);
        await Data.PrefillThenDecodeEqualKernel(client, Id, spec, layers, chunks, Decoded);

        KeptBytes(cluster, expectedPositive: true);
        using var http = new HttpClient();
        string metrics = await http.GetStringAsync(new Uri(cluster.Endpoints[0], "metrics"));
        Assert.True(
            TelemetryTests.Sum(metrics, "longcluster_kv_device_bytes", $"backend=\"{cluster.Silos[0].Resources.Backend.Name}\"") > 0,
            "the device gauge counts the kept segments");
        await client.DeleteSequenceAsync(Id);
        KeptBytes(cluster, expectedPositive: false);
    }

    [Theory]
    [InlineData("gpu", 0, "KernelBackend must be auto, cpu or ilgpu, got 'gpu' (LongCluster__Service__KernelBackend)")]
    [InlineData("ilgpu", -1, "DeviceBudgetBytes must be >= 0 (0 = 80% of the device), got -1")]
    public void Options_BadKernelBackendOrBudget_RefusedNamingTheSetting(string backend, long budget, string expected)
    {
        var options = new AttentionServiceOptions { ApiToken = "a token of sixteen chars", KernelBackend = backend, DeviceBudgetBytes = budget };
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.StartsWith(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_KernelBackendCaseInsensitive_AutoByDefault()
    {
        Assert.Equal("auto", new AttentionServiceOptions().KernelBackend);
        new AttentionServiceOptions { ApiToken = "a token of sixteen chars", KernelBackend = "ILGPU" }.Validate();
    }

    private static void KeptBytes(LocalAttentionCluster cluster, bool expectedPositive)
    {
        var backend = (Kernels.Gpu.IlgpuBackend)cluster.Silos[0].Resources.Backend;
        if (expectedPositive)
        {
            Assert.True(backend.KeptBytes > 0, "the shards' KV segments are kept in the backend's memory");
        }
        else
        {
            Assert.Equal(0, backend.KeptBytes);
        }
    }
}
