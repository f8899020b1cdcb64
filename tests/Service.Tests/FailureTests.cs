using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Core.Internal;
using Xunit.Abstractions;

namespace LongCluster.Service.Tests;

/// <summary>Silos killed on purpose (stopped without leaving, as a killed process): never wrong numbers.</summary>
public sealed class FailureTests(ITestOutputHelper output)
{
    private static Task<LocalAttentionCluster> StartAsync(int silos) => LocalAttentionCluster.StartAsync(
        silos, o => o.ReceiveTimeout = TimeSpan.FromSeconds(20), s => s.DetectFailuresFast());

    [Fact]
    public async Task SiloKilled_SequenceLostSegment_ReportsDegradedAndRefuses()
    {
        await using LocalAttentionCluster cluster = await StartAsync(4);
        using LongClusterClient client = cluster.NewClient();
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 4 };
        var layers = Enumerable.Range(0, 2).Select(l => Data.Layer(spec, 41, l)).ToArray();
        (SequenceInfo info, _) = await client.CreateAndPrefillAsync(spec, "lossy", 40, (l, _) => Data.Input(spec, layers[l], 0, 40));

        // Kill a silo that hosts a shard but not the coordinator.
        int victim = VictimIndex(cluster, info);
        SiloAddress dead = SiloAddress.FromParsableString(await cluster.KillAsync(victim));
        foreach (LocalSilo silo in cluster.Silos)
        {
            await silo.WaitForMembershipAsync(v => v.GetSiloStatus(dead) != SiloStatus.Active, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(30));
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

    [Theory]
    [InlineData("upload")]
    [InlineData("run")]
    [InlineData("read")]
    public async Task SiloKilledDuringPrefill_FailsRetryablyOrSucceedsExactly(string phase)
    {
        await using LocalAttentionCluster cluster = await StartAsync(4);
        var timeline = new Timeline();
        using var client = new LongClusterClient(new LongClusterClientOptions
        {
            Endpoints = cluster.Endpoints,
            Token = cluster.ApiToken,
            MaxRetries = 5,
            RetryDelay = TimeSpan.FromMilliseconds(500),
            RequestTimeout = TimeSpan.FromMinutes(1),
            OnRetry = r => timeline.Add($"retry {r.Attempt} of {r.What} in {r.Delay.TotalSeconds:0.0} s: {r.Failure.Status} {r.Failure.Code}: {r.Failure.Message}"),
        });
        var spec = new SequenceSpec { Layers = 4, QueryHeads = 8, KeyValueHeads = 2, HeadDim = 64, Shards = 0 };
        const int Tokens = 4096;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, Tokens, 10 * l)).ToArray();
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var progress = new SynchronousProgress(p =>
        {
            timeline.Add($"layer {p.Layer} {p.Phase} {p.BytesUploaded}/{p.BytesTotal}");
            if (p.Layer == 1 && p.Phase == phase)
            {
                reached.TrySetResult();
            }
        });
        Task<(SequenceInfo Sequence, IReadOnlyList<LayerOutput> Layers)> prefill = client.CreateAndPrefillAsync(
            spec, "killed", Tokens, (l, _) => Data.Input(spec, layers[l], 0, Tokens), progress: progress);
        await reached.Task.WaitAsync(TimeSpan.FromMinutes(2));
        SequenceInfo info = await client.GetSequenceAsync("killed");
        int victim = VictimIndex(cluster, info);
        timeline.Add($"killing silo {victim} ({cluster.Silos[victim].Address})");
        await cluster.KillAsync(victim);
        timeline.Add("killed");

        // Every request has a 1-minute deadline and at most 5 retries; the whole prefill is retried at most 5 times.
        // A correct cluster ends well within 3 minutes here (tens of seconds); past that, show where it stood.
        if (await Task.WhenAny(prefill, Task.Delay(TimeSpan.FromMinutes(3))) != prefill)
        {
            string state;
            try
            {
                using LongClusterClient probe = cluster.NewClient(retries: 0);
                SequenceInfo now = await probe.GetSequenceAsync("killed").WaitAsync(TimeSpan.FromSeconds(30));
                state = $"{now.State}, {now.Shards} shards, chunk {now.Chunk?.Index} with {now.Chunk?.LayersDone} layers done, problem: {now.Problem}";
            }
            catch (Exception e)
            {
                state = $"describe failed: {e.GetType().Name}: {e.Message}";
            }

            Assert.Fail($"the prefill neither ended nor failed 3 minutes after the kill; the sequence: {state}\n{timeline}");
        }

        try
        {
            (SequenceInfo done, IReadOnlyList<LayerOutput> outputs) = await prefill;
            Assert.Equal(SequenceState.Ready, done.State);
            output.WriteLine($"prefill succeeded after the kill on {done.Shards} shards; checking every layer against the kernel\n{timeline}");
            Data.EqualKernel(spec, layers, outputs, Tokens, "after a silo was killed");
        }
        catch (LongClusterException e)
        {
            output.WriteLine($"prefill failed after the kill: {e.Status} {e.Code} retryable={e.IsRetryable}: {e.Message}\n{timeline}");
            Assert.True(e.IsRetryable || e.Code == "degraded", $"a killed silo must give a retryable failure, got {e.Status} {e.Code}: {e.Message}\n{timeline}");
        }
    }

    /// <summary>A silo that hosts a shard of the sequence and not its coordinator (and is not silo 0, which holds membership).</summary>
    private static int VictimIndex(LocalAttentionCluster cluster, SequenceInfo info)
    {
        IReadOnlyList<LocalSilo> silos = cluster.Silos;
        for (int i = 1; i < silos.Count; i++)
        {
            string address = silos[i].Address;
            if (address != info.Coordinator && info.ShardMap.Any(s => s.Silo == address))
            {
                return i;
            }
        }

        throw new InvalidOperationException($"no silo but the primary hosts a shard without the coordinator ({info.Coordinator})");
    }

    /// <summary>What happened when, from the test's start: printed when the test fails (or passes, in its output).</summary>
    private sealed class Timeline
    {
        private readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _events = new();

        public void Add(string what) => _events.Enqueue($"{_clock.Elapsed.TotalSeconds,7:0.00} s  {what}");

        public override string ToString() => string.Join('\n', _events);
    }
}

/// <summary>A layer is the unit of retry: a rank that fails part-way fails the layer everywhere, and it runs again exactly.</summary>
public sealed class LayerRetryTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    [Fact]
    public async Task RankFailsMidLayer_RetryableAndRolledBack_RerunIsExact()
    {
        var spec = new SequenceSpec { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16, Layout = "zigzag", Mask = "causal", Shards = 3 };
        const int Tokens = 90;
        var layers = Enumerable.Range(0, 2).Select(l => Data.Layer(spec, Tokens, 70 + l)).ToArray();
        using LongClusterClient client = fixture.Cluster.NewClient(retries: 0);
        await client.CreateSequenceAsync(spec, "retry");
        try
        {
            ChunkPlan plan = await client.BeginChunkAsync("retry", new ChunkRequest(Tokens));
            LayerOutput first = await client.PrefillLayerAsync(plan, 0, Data.Input(spec, layers[0], 0, Tokens), spec);
            await client.UploadLayerAsync(plan, 1, Data.Input(spec, layers[1], 0, Tokens));

            // Rank 2 fails its second send of layer 1 (after ring step 1 has run on some ranks).
            int sends = 0;
            fixture.Faults.Fail = (source, _) => source == 2 && Interlocked.Increment(ref sends) == 2;

            LongClusterException failed = await Assert.ThrowsAsync<LongClusterException>(() => client.RunLayerAsync("retry", plan.Index, 1));
            Assert.True((failed.Status, failed.IsRetryable) == (503, true), $"expected 503 retryable, got {failed.Status} {failed.Code}: {failed.Message}");
            Assert.Contains("rolled back on every shard", failed.Message, StringComparison.Ordinal);
            SequenceInfo during = await client.GetSequenceAsync("retry");
            Assert.Equal((SequenceState.Prefilling, 1), (during.State, during.Chunk!.LayersDone));

            fixture.Faults.Fail = null;
            await client.RunLayerAsync("retry", plan.Index, 1);
            (float[] o, float[] lse) = await client.ReadOutputAsync(plan, 1, spec);
            (float[] expectedO, float[] expectedL) = Data.Kernel(spec, layers[1], Tokens);
            Data.Equal(expectedO, o, 1e-4, "layer 1 O after the retry");
            Data.Equal(expectedL, lse, 1e-4, "layer 1 LSE after the retry");

            // The retried layer's KV went in once: decoding a token sees every prefilled row exactly once.
            var longer = Data.Layer(spec, Tokens + 1, 70 + 1);
            Array.Copy(layers[1].Q, longer.Q, layers[1].Q.Length);
            Array.Copy(layers[1].K, longer.K, layers[1].K.Length);
            Array.Copy(layers[1].V, longer.V, layers[1].V.Length);
            LayerInput row0 = Data.Input(spec, layers[0], Tokens - 1, 1);
            await client.DecodeAsync("retry", 0, row0.Query, row0.Key, row0.Value);
            LayerInput row1 = Data.Input(spec, longer, Tokens, 1);
            DecodeOutput decoded = await client.DecodeAsync("retry", 1, row1.Query, row1.Key, row1.Value);
            (float[] refO, float[] refL) = Data.Kernel(spec, longer, Tokens + 1);
            Data.Equal(refO.AsSpan(Tokens * 64, 64), decoded.Output, 1e-4, "decode O after the retried layer");
            Data.Equal(refL.AsSpan(Tokens * 4, 4), decoded.LogSumExp, 1e-4, "decode LSE after the retried layer");
            Assert.Equal(first.Output.Length, o.Length);
        }
        finally
        {
            fixture.Faults.Fail = null;
            await client.DeleteSequenceAsync("retry");
        }
    }
}

/// <summary>Shards whose coordinator lost their sequence do not hold memory forever.</summary>
public sealed class OrphanTests
{
    [Fact]
    public async Task CoordinatorLost_IdleShardsAreCollected_AndHeldSequencesStay()
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(3, o => o.OrphanCheckInterval = TimeSpan.FromMilliseconds(100));
        using LongClusterClient client = cluster.NewClient(retries: 0);
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Shards = 3 };
        var layer = Data.Layer(spec, 30, 5);
        await client.CreateAndPrefillAsync(spec, "kept", 30, (_, _) => Data.Input(spec, layer, 0, 30));
        await client.CreateAndPrefillAsync(spec, "orphaned", 30, (_, _) => Data.Input(spec, layer, 0, 30));
        long bothHeld = Resident(cluster);

        // The coordinator of "orphaned" loses its state, as when its silo fails; its shards live on elsewhere.
        IGrainFactory grains = cluster.Silos[0].Services.GetRequiredService<IGrainFactory>();
        await grains.GetGrain<ICoordinatorGrain>("orphaned").Cast<IGrainManagementExtension>().DeactivateOnIdle();

        // The shards' timers find the coordinator no longer holds them (every 100 ms here); wait for the memory to go.
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (Resident(cluster) != bothHeld / 2 && !deadline.IsCancellationRequested)
        {
            await Task.Delay(50);
        }

        // Exactly half the bytes are left (both sequences have the same shape), and "kept" still answers exactly.
        Assert.Equal(bothHeld / 2, Resident(cluster));
        Assert.Equal(404, (await Assert.ThrowsAsync<LongClusterException>(() => client.GetSequenceAsync("orphaned"))).Status);
        var longer = Data.Layer(spec, 31, 5);
        LayerInput row = Data.Input(spec, longer, 30, 1);
        DecodeOutput decoded = await client.DecodeAsync("kept", 0, row.Query, row.Key, row.Value);
        (float[] o, _) = Data.Kernel(spec, longer, 31);
        Data.Equal(o.AsSpan(30 * 32, 32), decoded.Output, 1e-4, "O of the sequence kept");
    }

    private static long Resident(LocalAttentionCluster cluster) => cluster.Silos.Sum(s => s.Resources.ResidentBytes);
}
