using System.Diagnostics;
using System.Globalization;
using LongCluster.Cli.Processes;
using LongCluster.Client;
using LongCluster.Contracts;
using Xunit.Abstractions;

namespace LongCluster.Service.Tests;

/// <summary>
/// <c>longcluster-silo</c> processes clustered through a real redis-server with mutual TLS: real crashes (SIGKILL),
/// real hangs (SIGSTOP), a real drain (SIGTERM), Redis restarted under the cluster, and an outsider refused.
/// </summary>
public sealed class ProcessClusterTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Token = "a process test api token";

    private readonly DirectoryInfo _credentials = Directory.CreateTempSubdirectory("lc-test-tls-");
    private ClusterCertificates _authority = null!;

    private static string SiloAssembly => Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll");

    public Task InitializeAsync()
    {
        _authority = ClusterCertificates.Create(_credentials.FullName);
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        _credentials.Delete(recursive: true);
        return Task.CompletedTask;
    }

    /// <summary>Fast failure detection, so a dead or hung silo is declared dead in seconds.</summary>
    private static Dictionary<string, string> Settings() => new()
    {
        ["ClusterId"] = "process-tests",
        ["ServiceId"] = "process-tests",
        ["Service:ApiToken"] = Token,
        ["Service:ReceiveTimeout"] = "00:02:00",
        ["Membership:ProbeTimeout"] = "00:00:00.5",
        ["Membership:MinProbeTimeout"] = "00:00:00.5",
        ["Membership:NumMissedProbesLimit"] = "2",
        ["Membership:TableRefreshTimeout"] = "00:00:01",
        ["Membership:IAmAliveTablePublishTimeout"] = "00:00:01",
    };

    private static LongClusterClient Client(IEnumerable<SiloProcess> silos, int retries = 4) => new(new LongClusterClientOptions
    {
        Endpoints = [.. silos.Select(s => s.HttpEndpoint!)],
        Token = Token,
        MaxRetries = retries,
        RetryDelay = TimeSpan.FromMilliseconds(500),
        RequestTimeout = TimeSpan.FromMinutes(1),
    });

    [Fact]
    public async Task ThreeSilos_OneKilledMidPrefill_RetryableOrExact_SurvivorsStillExact()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(3, SiloAssembly, Settings(), TimeSpan.FromSeconds(90), _authority);
        using LongClusterClient client = Client(cluster.Silos);
        var spec = new SequenceSpec { Layers = 3, QueryHeads = 6, KeyValueHeads = 3, HeadDim = 32, Layout = "zigzag", Mask = "causal" };
        const int Tokens = 600;
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, Tokens, 3 + l)).ToArray();
        var killed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var progress = new SynchronousProgress(p =>
        {
            if (p.Layer == 1 && p.Phase == "run" && killed.TrySetResult())
            {
                cluster.Silos[2].Kill();
            }
        });
        try
        {
            (SequenceInfo info, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(spec, "procs", Tokens, (l, _) => Data.Input(spec, layers[l], 0, Tokens), progress: progress);
            output.WriteLine($"the prefill succeeded after the kill, on {info.Shards} shards");
            Data.EqualKernel(spec, layers, outputs, Tokens, "after a silo process was killed");
        }
        catch (LongClusterException e)
        {
            output.WriteLine($"the prefill failed after the kill: {e.Status} {e.Code}: {e.Message}");
            Assert.True(e.IsRetryable || e.Code is "degraded" or "not_found", $"a killed silo must give a retryable failure or a degraded sequence, got {e.Status} {e.Code}: {e.Message}");
        }

        Assert.True(killed.Task.IsCompleted, "the silo was never killed: the prefill did not reach layer 1");

        // The two left answer exactly: a new sequence over them.
        using LongClusterClient survivors = Client(cluster.Silos.Take(2));
        await AssertExactAsync(survivors, spec with { Shards = 2 }, "after-kill", 200);
    }

    [Fact]
    public async Task SiloHangs_LayerFailsRetryablyWithinFailureDetection_NotTheReceiveTimeout()
    {
        // The receive timeout is 2 minutes: a layer that waited for it would fail the deadline below.
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(3, SiloAssembly, Settings(), TimeSpan.FromSeconds(90), _authority);
        using LongClusterClient client = Client(cluster.Silos.Take(1), retries: 0);
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 6, KeyValueHeads = 3, HeadDim = 32, Shards = 3 };
        const int Tokens = 3000;
        var layer = Data.Layer(spec, Tokens, 11);
        await client.CreateSequenceAsync(spec, "hung");
        ChunkPlan plan = await client.BeginChunkAsync("hung", new ChunkRequest(Tokens));
        await client.UploadLayerAsync(plan, 0, Data.Input(spec, layer, 0, Tokens));

        Signal(cluster.Silos[2], "STOP");
        var clock = Stopwatch.StartNew();
        try
        {
            LongClusterException failed = await Assert.ThrowsAsync<LongClusterException>(() => client.RunLayerAsync("hung", plan.Index, 0).WaitAsync(TimeSpan.FromSeconds(60)));
            output.WriteLine($"failed after {clock.Elapsed.TotalSeconds:0.0} s: {failed.Status} {failed.Code}: {failed.Message}");
            Assert.True(failed.IsRetryable || failed.Code == "degraded", $"{failed.Status} {failed.Code}: {failed.Message}");
        }
        finally
        {
            Signal(cluster.Silos[2], "CONT");
        }
    }

    [Fact]
    public async Task RedisRestarted_UnderARunningCluster_StillAnswersExactly()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(2, SiloAssembly, Settings(), TimeSpan.FromSeconds(90), _authority);
        using LongClusterClient client = Client(cluster.Silos);
        var spec = new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16 };
        await AssertExactAsync(client, spec, "before-restart", 100);
        await cluster.Redis.KillAsync();
        await AssertExactAsync(client, spec, "redis-down", 100);
        await cluster.Redis.RestartAsync();
        await AssertExactAsync(client, spec, "after-restart", 100);
    }

    [Fact]
    public async Task SigTerm_DrainsAndLeaves_ExitCodeZero_OthersServe()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(2, SiloAssembly, Settings(), TimeSpan.FromSeconds(90), _authority);
        cluster.Silos[1].Terminate();
        Assert.Equal(0, await cluster.Silos[1].ExitCodeAsync(TimeSpan.FromSeconds(60)));
        using LongClusterClient client = Client(cluster.Silos.Take(1));
        using var http = new HttpClient();
        MembershipSummary? view = await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<MembershipSummary>(http, new Uri(cluster.Silos[0].HttpEndpoint!, "membership"));
        Assert.Equal([cluster.Addresses[0]], view!.Active);
        await AssertExactAsync(client, new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16 }, "after-drain", 64);
    }

    [Fact]
    public async Task SiloWithoutTheClustersCredentials_CannotJoin()
    {
        await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(1, SiloAssembly, Settings(), TimeSpan.FromSeconds(90), _authority);
        ClusterCertificates outsider = ClusterCertificates.Create(Path.Combine(_credentials.FullName, "outsider"), "not the cluster");
        SiloTlsOptions tls = outsider.Issue("intruder");
        var settings = new Dictionary<string, string>(Settings())
        {
            ["Clustering"] = SiloOptions.RedisClustering,
            ["Redis"] = cluster.Redis.Endpoint,
            ["HttpPort"] = "0",
            ["SiloPort"] = RedisServerProcess.FreePort().ToString(CultureInfo.InvariantCulture),
            ["Name"] = "intruder",
            ["Tls:CertificateFile"] = tls.CertificateFile,
            ["Tls:KeyFile"] = tls.KeyFile,
            ["Tls:AuthorityFile"] = tls.AuthorityFile,
        };
        using SiloProcess intruder = SiloProcess.Start(SiloAssembly, settings);

        // It reaches the cluster's silo and is turned away in the TLS handshake (its certificate does not chain to the
        // cluster's authority, nor the cluster's to its own), so it never becomes an active member of the cluster.
        string refused = await intruder.WaitForLineAsync(l => l.Contains("rejected by the provided RemoteCertificateValidationCallback", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        output.WriteLine(refused);
        using var http = new HttpClient();
        MembershipSummary? view = await System.Net.Http.Json.HttpClientJsonExtensions.GetFromJsonAsync<MembershipSummary>(http, new Uri(cluster.Silos[0].HttpEndpoint!, "membership"));
        Assert.Equal([cluster.Addresses[0]], view!.Active);

        // The cluster still serves exactly.
        using LongClusterClient client = Client(cluster.Silos);
        await AssertExactAsync(client, new SequenceSpec { Layers = 1, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 16 }, "with-intruder", 64);
        Assert.DoesNotContain(intruder.Lines, l => l.StartsWith(SiloHost.ReadyLine, StringComparison.Ordinal) && view.Active.Any(a => l.Contains(a, StringComparison.Ordinal)));
    }

    [Fact]
    public async Task SiloWhosePortIsTaken_FailsAtOnceWithItsOwnError_NotAfterTheReadyTimeout()
    {
        // Every attempt is sent to a port this test holds: the silo cannot bind it and exits. Start must say so (the
        // exit, the socket error) as soon as the tries are spent, not wait out the ten-minute timeout in silence.
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        string port = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port.ToString(CultureInfo.InvariantCulture);
        var taken = new SiloLaunch("127.0.0.1", [], new Dictionary<string, string> { ["SiloPort"] = port });
        SiloExitedException e = await Assert.ThrowsAsync<SiloExitedException>(
            () => SiloProcessCluster.StartAsync(1, SiloAssembly, Settings(), TimeSpan.FromMinutes(10), _authority, _ => taken));
        output.WriteLine(e.Message);
        Assert.True(e.PortTaken, e.Message);
        Assert.NotEqual(0, e.ExitCode);
        Assert.Contains("Address already in use", e.Message, StringComparison.Ordinal);
    }

    /// <summary>A fresh sequence of <paramref name="tokens"/> tokens prefilled and decoded equals the kernel.</summary>
    private static async Task AssertExactAsync(LongClusterClient client, SequenceSpec spec, string id, int tokens)
    {
        var layers = Enumerable.Range(0, spec.Layers).Select(l => Data.Layer(spec, tokens + 1, 40 + l)).ToArray();
        (_, IReadOnlyList<LayerOutput> outputs) = await client.CreateAndPrefillAsync(spec, id, tokens, (l, _) => Data.Input(spec, layers[l], 0, tokens));
        int rowO = spec.QueryHeads * spec.HeadDim;
        for (int l = 0; l < spec.Layers; l++)
        {
            (float[] o, float[] lse) = Data.Kernel(spec, layers[l], tokens + 1);
            Data.Equal(o.AsSpan(0, tokens * rowO), outputs[l].Output, 1e-4, $"{id}: layer {l} O");
            Data.Equal(lse.AsSpan(0, tokens * spec.QueryHeads), outputs[l].LogSumExp, 1e-4, $"{id}: layer {l} LSE");
            LayerInput row = Data.Input(spec, layers[l], tokens, 1);
            DecodeOutput decoded = await client.DecodeAsync(id, l, row.Query, row.Key, row.Value);
            Data.Equal(o.AsSpan(tokens * rowO, rowO), decoded.Output, 1e-4, $"{id}: layer {l} decode O");
        }

        await client.DeleteSequenceAsync(id);
    }

    private static void Signal(SiloProcess silo, string signal)
    {
        using Process kill = Process.Start("kill", [$"-{signal}", silo.ProcessId.ToString(CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }
}
