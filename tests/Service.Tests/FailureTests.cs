using LongCluster.Client;
using LongCluster.Grains;
using LongCluster.Runtime;
using LongCluster.Runtime.Hosting;
using Xunit.Abstractions;

namespace LongCluster.Service.Tests;

/// <summary>Silos killed on purpose (stopped without leaving, as a killed process): never wrong numbers.</summary>
public sealed class FailureTests(ITestOutputHelper output)
{
    private static Task<LocalAttentionCluster> StartAsync(int silos) => LocalAttentionCluster.StartAsync(
        silos,
        o => o.ReceiveTimeout = TimeSpan.FromSeconds(20),
        s =>
        {
            s.Timing.HeartbeatInterval = TimeSpan.FromMilliseconds(200);
            s.Timing.DeathTimeout = TimeSpan.FromSeconds(2);
        });

    [Fact]
    public async Task SiloKilled_SequenceLostSegment_ReportsDegradedAndRefuses()
    {
        await using LocalAttentionCluster cluster = await StartAsync(4);
        using LongClusterClient client = cluster.NewClient();
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 4 };
        var layers = Enumerable.Range(0, 2).Select(l => Data.Layer(spec, 41, l)).ToArray();
        (SequenceInfo info, _) = await client.CreateAndPrefillAsync(spec, "lossy", 40, (l, _) => Data.Input(spec, layers[l], 0, 40));

        // Kill a silo that hosts a shard but not the coordinator.
        int victim = VictimIndex(cluster, "lossy", info);
        SiloAddressText dead = new(cluster.Cluster.Silos[victim].Address.ToString());
        await cluster.Cluster.CrashAsync(victim);
        foreach (Silo silo in cluster.Cluster.Silos)
        {
            await silo.Membership.WaitForViewAsync(v => v.ActiveSilos.All(a => a.ToString() != dead.Text), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
        }

        using LongClusterClient survivor = cluster.NewClient(retries: 0);
        SequenceInfo after = await survivor.GetSequenceAsync("lossy");
        Assert.Equal(SequenceState.Degraded, after.State);
        Assert.Contains("lost its KV", after.Problem, StringComparison.Ordinal);

        LayerInput row = Data.Input(spec, layers[0], 40, 1);
        LongClusterException refused = await Assert.ThrowsAsync<LongClusterException>(() => survivor.DecodeAsync("lossy", 0, row.Query, row.Key, row.Value));
        Assert.Equal((409, "degraded", false), (refused.Status, refused.Code, refused.IsRetryable));
        LongClusterException noChunk = await Assert.ThrowsAsync<LongClusterException>(() => survivor.BeginChunkAsync("lossy", new ChunkRequest(4)));
        Assert.Equal("degraded", noChunk.Code);
        await survivor.DeleteSequenceAsync("lossy");
    }

    [Fact]
    public async Task SiloKilledDuringPrefill_FailsRetryablyOrSucceedsExactly()
    {
        await using LocalAttentionCluster cluster = await StartAsync(4);
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = cluster.Endpoints,
            Token = cluster.ApiToken,
            MaxRetries = 5,
            RetryDelay = TimeSpan.FromMilliseconds(500),
            RequestTimeout = TimeSpan.FromMinutes(2),
        });
        var spec = new SequenceSpec { Layers = 4, QueryHeads = 8, KeyValueHeads = 2, HeadDim = 64, Shards = 0 };
        const int Tokens = 4096;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, Tokens, 10 * l)).ToArray();
        var firstLayerRan = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var progress = new SynchronousProgress(p =>
        {
            if (p.Layer == 1 && p.Phase == "run")
            {
                firstLayerRan.TrySetResult();
            }
        });
        Task<(SequenceInfo Sequence, IReadOnlyList<LayerOutput> Layers)> prefill = client.CreateAndPrefillAsync(
            spec, "killed", Tokens, (l, _) => Data.Input(spec, layers[l], 0, Tokens), progress: progress);
        await firstLayerRan.Task.WaitAsync(TimeSpan.FromMinutes(2));
        SequenceInfo info = await client.GetSequenceAsync("killed");
        await cluster.Cluster.CrashAsync(VictimIndex(cluster, "killed", info));

        try
        {
            (SequenceInfo done, IReadOnlyList<LayerOutput> outputs) = await prefill.WaitAsync(TimeSpan.FromMinutes(5));
            Assert.Equal(SequenceState.Ready, done.State);
            output.WriteLine($"prefill succeeded after the kill on {done.Shards} shards; checking every layer against the kernel");
            for (int l = 0; l < spec.Layers; l++)
            {
                (float[] o, float[] lse) = Data.Kernel(spec, layers[l], Tokens);
                Data.Equal(o, outputs[l].Output, 1e-4, $"layer {l} O after a silo was killed");
                Data.Equal(lse, outputs[l].LogSumExp, 1e-4, $"layer {l} LSE after a silo was killed");
            }
        }
        catch (LongClusterException e)
        {
            output.WriteLine($"prefill failed after the kill: {e.Status} {e.Code} retryable={e.IsRetryable}: {e.Message}");
            Assert.True(e.IsRetryable || e.Code == "degraded", $"a killed silo must give a retryable failure, got {e.Status} {e.Code}: {e.Message}");
        }
    }

    /// <summary>A silo that hosts a shard of the sequence and not its coordinator (and is not silo 0, which tests call through).</summary>
    private static int VictimIndex(LocalAttentionCluster cluster, string id, SequenceInfo info)
    {
        IReadOnlyList<Silo> silos = cluster.Cluster.Silos;
        string coordinator = silos[0].Router.OwnerOf(new GrainId("coordinator", id)).ToString();
        for (int i = 1; i < silos.Count; i++)
        {
            string address = silos[i].Address.ToString();
            if (address != coordinator && info.ShardMap.Any(s => s.Silo == address))
            {
                return i;
            }
        }

        throw new InvalidOperationException("no silo hosts a shard without the coordinator");
    }

    private sealed record SiloAddressText(string Text);

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool, which would race the test).</summary>
    private sealed class SynchronousProgress(Action<PrefillProgress> report) : IProgress<PrefillProgress>
    {
        public void Report(PrefillProgress value) => report(value);
    }
}
