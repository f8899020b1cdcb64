using LongCluster.Client;
using LongCluster.Grains;
using LongCluster.Runtime.Hosting;

namespace LongCluster.Service.Tests;

/// <summary>Silo processes (<c>longcluster-silo</c>) clustered through a real redis-server.</summary>
public sealed class ProcessClusterTests
{
    private const string Token = "a process test api token";

    private static Dictionary<string, string> Settings() => new()
    {
        ["ClusterId"] = "service-process-tests",
        ["Secret"] = "a process test secret, long enough",
        ["Service:ApiToken"] = Token,
        ["Service:ReceiveTimeout"] = "00:00:20",
        ["Timing:HeartbeatInterval"] = "00:00:00.2",
        ["Timing:DeathTimeout"] = "00:00:02",
    };

    [Theory]
    [InlineData("zigzag", "causal")]
    [InlineData("ulysses", "document-causal")]
    public async Task SiloProcesses_PrefillDecode_EqualKernel_ThenKilledSiloIsRefusedNotWrong(string layout, string mask)
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(
            3, Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll"), Settings(), TimeSpan.FromSeconds(60));
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = [.. cluster.Silos.Select(s => s.HttpEndpoint!)],
            Token = Token,
            MaxRetries = 2,
            RetryDelay = TimeSpan.FromMilliseconds(100),
        });
        // Hq = 6 and Hkv = 3 divide by the Ulysses degree 3 (one shard per silo).
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 6, KeyValueHeads = 3, HeadDim = 32, Layout = layout, Mask = mask };
        const int Tokens = 300;
        int[]? documents = mask.StartsWith("document", StringComparison.Ordinal) ? [.. Enumerable.Range(0, Tokens + 1).Select(t => t / 120)] : null;
        var layers = Enumerable.Range(0, 2).Select(l => Data.Layer(spec, Tokens + 1, 3 + l)).ToArray();
        (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(spec, "procs", Tokens, (l, _) => Data.Input(spec, layers[l], 0, Tokens), documents?[..Tokens]);
        Assert.Equal(3, info.ShardMap.Select(s => s.Silo).Distinct().Count());
        for (int l = 0; l < 2; l++)
        {
            (float[] o, float[] lse) = Data.Kernel(spec, layers[l], Tokens + 1, documents);
            Data.Equal(o.AsSpan(0, Tokens * 192), outputs[l].Output, 1e-4, $"layer {l} O");
            Data.Equal(lse.AsSpan(0, Tokens * 6), outputs[l].LogSumExp, 1e-4, $"layer {l} LSE");
            LayerInput row = Data.Input(spec, layers[l], Tokens, 1);
            DecodeOutput decoded = await client.DecodeAsync("procs", l, row.Query, row.Key, row.Value, documents?[Tokens]);
            Data.Equal(o.AsSpan(Tokens * 192, 192), decoded.Output, 1e-4, $"layer {l} decode O");
            Data.Equal(lse.AsSpan(Tokens * 6, 6), decoded.LogSumExp, 1e-4, $"layer {l} decode LSE");
        }

        // SIGKILL one silo process: every silo hosts a shard, so the sequence lost a segment. Once a survivor has
        // declared it dead, asked through a survivor (the SDK retrying while views converge), the sequence is degraded
        // (or gone with its coordinator) and refuses to decode: never a wrong answer.
        string killed = cluster.Addresses[2];
        cluster.Silos[2].Kill();
        await Task.WhenAny(cluster.Silos.Take(2).Select(s => s.WaitForLineAsync(l => l.Contains($"Declared silo {killed} dead", StringComparison.Ordinal), TimeSpan.FromSeconds(30))));
        using var survivor = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = [cluster.Silos[0].HttpEndpoint!],
            Token = Token,
            MaxRetries = 6,
            RetryDelay = TimeSpan.FromMilliseconds(200),
        });
        LayerInput probe = Data.Input(spec, layers[0], Tokens, 1);
        LongClusterException refused = await Assert.ThrowsAsync<LongClusterException>(() => survivor.DecodeAsync("procs", 0, probe.Query, probe.Key, probe.Value, documents?[Tokens]));
        Assert.Contains(refused.Code, new[] { "degraded", "not_found" });
        Assert.False(refused.IsRetryable);
    }
}
