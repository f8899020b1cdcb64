using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using LongCluster.Cli.Processes;
using LongCluster.Kernels.Planning;

namespace LongCluster.Cli.Tests;

/// <summary>
/// <c>bench scaling</c> with real silo processes and a real redis-server; where this test runs as root with iproute2,
/// also with network namespaces (the harness's own veth links and qdiscs), else on loopback, as the harness says.
/// </summary>
public sealed partial class BenchScalingTests
{
    [Fact]
    public void BenchScaling_TwoSilosOnLoopback_VerifiedPointsAndSkipJsonLast()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int code = CliApp.Run(
            ["bench", "scaling", "--tokens", "768", "--silos", "2", "--layouts", "zigzag,ulysses,hybrid:4", "--layers", "2", "--hq", "4", "--hkv", "2", "--d", "32"], stdout, stderr);

        string text = stdout.ToString();
        Assert.True(code == 0, text + stderr);
        Assert.DoesNotContain('\u001b', text);
        string[] lines = text.TrimEnd().Split('\n');
        Assert.Contains(lines, l => l.StartsWith("| silos | layout ", StringComparison.Ordinal) && l.Contains("| layer ms | compute ms | waiting ms | all-to-all ms | transfer ms |", StringComparison.Ordinal));
        using var json = JsonDocument.Parse(lines[^1]);
        JsonElement root = json.RootElement;
        Assert.Equal(JsonValueKind.Null, root.GetProperty("error").ValueKind);
        Assert.Equal("loopback", root.GetProperty("link").GetString());
        JsonElement[] points = [.. root.GetProperty("points").EnumerateArray()];
        Assert.Equal(new[] { "zigzag", "ulysses" }, points.Select(p => p.GetProperty("layout").GetString()!).ToArray());
        int threads = Math.Max(1, AllowedCores() / 2);
        Assert.All(points, p =>
        {
            Assert.Equal(2, p.GetProperty("silos").GetInt32());
            Assert.Equal(768, p.GetProperty("tokens").GetInt32());
            Assert.Equal("loopback", p.GetProperty("link").GetString());
            Assert.True(p.GetProperty("ok").GetBoolean());
            Assert.Equal(2, p.GetProperty("layer_ms").GetArrayLength());
            Assert.Equal(p.GetProperty("layer_ms")[1].GetDouble(), p.GetProperty("measured_ms").GetDouble());
            Assert.True(p.GetProperty("measured_ms").GetDouble() > 0);
            Assert.True(p.GetProperty("compute_ms").GetDouble() > 0);
            // Each rounded to 0.001 ms on its own.
            Assert.Equal(p.GetProperty("all_to_all_ms").GetDouble(), p.GetProperty("scatter_ms").GetDouble() + p.GetProperty("gather_ms").GetDouble(), tolerance: 0.002);
            Assert.Equal(threads, p.GetProperty("threads_per_silo").GetInt32());
            Assert.True(p.GetProperty("predicted_ms").GetDouble() > 0, "the model's prediction (this-machine profile) beside the measurement");
        });
        Assert.True(points[1].GetProperty("all_to_all_ms").GetDouble() > 0, "Ulysses scatters and gathers");
        // The default model is this machine, calibrated before the silos start; each point says where its shards ran.
        Assert.Contains(lines, l => l.StartsWith("  model: profile this-machine (calibrated now, before any silo starts): kernel ", StringComparison.Ordinal));
        if (points[0].GetProperty("cores_of_shard").ValueKind != JsonValueKind.Null)
        {
            Assert.All(points, p => Assert.Equal(2, p.GetProperty("cores_of_shard").GetArrayLength()));
            Assert.Contains(lines, l => l.StartsWith("    zigzag: layers ", StringComparison.Ordinal) && l.Contains("; shards on cpus 0:", StringComparison.Ordinal));
        }

        JsonElement skipped = Assert.Single(root.GetProperty("skipped").EnumerateArray());
        Assert.Equal("hybrid:4", skipped.GetProperty("layout").GetString());
        Assert.Equal("layout hybrid:4 needs the shard count (2) to be a multiple of the Ulysses degree 4", skipped.GetProperty("reason").GetString());
    }

    [Fact]
    public void BenchScaling_SiloKilledMidRun_ReportsCleansUpExitsOne()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        bool namespaces = SiloNetwork.Unavailable() is null;

        int code = CliApp.Run(
            ["bench", "scaling", "--tokens", "512", "--silos", "2", "--layouts", "zigzag", "--layers", "3", "--hq", "2", "--hkv", "1", "--d", "16", "--link", "1gbit:0us", "--kill-silo-after-layers", "1"],
            stdout, stderr);

        string text = stdout.ToString();
        Assert.True(code == 1, text + stderr);
        Assert.Contains("    killed silo 1 (pid ", text);
        Assert.Contains("bench scaling: FAILED: ", text);
        using var json = JsonDocument.Parse(text.TrimEnd().Split('\n')[^1]);
        Assert.Equal(JsonValueKind.String, json.RootElement.GetProperty("error").ValueKind);
        Assert.Equal(0, json.RootElement.GetProperty("points").GetArrayLength());
        AssertNothingLeft(text, Environment.ProcessId, namespaces);
    }

    [Fact]
    public async Task BenchScaling_SigTermMidRun_StopsCleansUpExitsOne()
    {
        bool namespaces = SiloNetwork.Unavailable() is null;
        using var cli = StreamingProcess.Start(
            "bench", "scaling", "--tokens", "512", "--silos", "2", "--layouts", "zigzag", "--layers", "1000", "--hq", "2", "--hkv", "1", "--d", "16", "--link", "1gbit:0us");
        await cli.WaitForLineAsync(l => l.StartsWith("    silo 1 pid ", StringComparison.Ordinal), TimeSpan.FromMinutes(3));
        cli.Signal("TERM");

        Assert.Equal(1, await cli.ExitCodeAsync(TimeSpan.FromMinutes(1)));
        string text = string.Join('\n', cli.Lines);
        Assert.Contains("bench scaling: FAILED: stopped by a signal", text);
        int harness = int.Parse(HarnessPid().Match(text).Groups[1].Value, CultureInfo.InvariantCulture);
        AssertNothingLeft(text, harness, namespaces);
    }

    /// <summary>A 2-core host at 1 GFLOP/s per core whose cores move blocks at 8 Gbit/s, as <c>plan --calibrate</c> writes one.</summary>
    private static HardwareProfile TwoCoreHost() => new()
    {
        Name = "host", KernelGflops = 2, KernelSource = "test", LinkGbitPerSecond = 8, LinkSource = "test", LinkLatencyMicroseconds = 0, LatencySource = "test",
        TransportGbitPerSecond = 8, SharedHost = true, HostCores = 2, LinkShared = true, Overlap = 1,
    };

    [Fact]
    public void ScalingPrediction_PinnedShards_FollowWhichShardsShareACore()
    {
        // Contiguous causal, 4 shards of 4096 tokens, 8:2 heads, d 128: a full block is F = 4096² · 8 · 512 FLOP at
        // 1 GFLOP/s a core, shard r does a diagonal half-block and r full ones. Shards {0,3} and {1,2} sharing a core
        // finish after 4 F-units; {0,1} and {2,3} after 6 (shards 2 and 3 share 2.5 units, then 3 goes on alone);
        // a ring block's transport (8 MB at 0.5 GB/s a core) adds little.
        var point = new ScalingPoint(4, "contiguous", 16384, 8, 2, 128, "f32", "causal", 1, true, null, null, 2, [[0], [1], [1], [0]]);
        Func<ScalingPoint, double?> predict = ScalingPrediction.From(TwoCoreHost());

        double balanced = predict(point)!.Value;
        double unbalanced = predict(point with { CoresOfShard = [[0], [0], [1], [1]] })!.Value;
        double quarter = predict(point with { CoresOfShard = null })!.Value;

        double f = 4096.0 * 4096 * 8 * 512 / 1e9 * 1e3;
        Assert.InRange(balanced, 4 * f, 4.2 * f);
        Assert.InRange(unbalanced, 6 * f, 6.2 * f);
        // Without the pinning: a quarter of the host each, step by step: a half-block then 3 full blocks at half a core.
        Assert.InRange(quarter, 7 * f, 7.2 * f);
    }

    [Fact]
    public void ScalingPrediction_ShapedLink_EachSilosOwnRateOverlappingCompute()
    {
        // 2 contiguous shards of 2048 tokens, 1:1 heads, d 64, full mask, a core each: the one ring block (2048 rows ·
        // 520 B = 1,064,960 B) on a 1 Mbit/s link of its own takes 8.51968 s, sent as step 0 starts; step 1 waits for it
        // and then computes 2048² · 256 FLOP at 1 GFLOP/s (1.073741824 s). Shared among the 2 silos, or added to
        // compute instead of overlapping it, the layer would be longer.
        var point = new ScalingPoint(2, "contiguous", 4096, 1, 1, 64, "f32", "full", 1, false, 1e6, 0, 2, [[0], [1]]);

        double predicted = ScalingPrediction.From(TwoCoreHost())(point)!.Value;

        Assert.Equal(8519.68 + 1073.741824, predicted, 0);
    }

    [Theory]
    [InlineData("10gbit:50us", 1e10, 50)]
    [InlineData("1.5Mbit:2ms", 1.5e6, 2000)]
    [InlineData("100kbit:0s", 1e5, 0)]
    public void LinkShapeParse_Valid_BitsAndMicroseconds(string text, double bits, double microseconds)
    {
        LinkShape link = LinkShape.Parse(text);

        Assert.Equal(bits, link.BitsPerSecond);
        Assert.Equal(microseconds, link.LatencyMicroseconds);
    }

    [Theory]
    [InlineData("10gbps:50us", "expected RATE:LATENCY such as 10gbit:50us")]
    [InlineData("10gbit", "expected RATE:LATENCY such as 10gbit:50us")]
    [InlineData("1kbit:1ms", "the rate must be at least 8kbit")]
    public void LinkShapeParse_Invalid_Throws(string text, string message)
    {
        Assert.Contains(message, Assert.Throws<FormatException>(() => LinkShape.Parse(text)).Message);
    }

    [Fact]
    public void RemoveStale_NamespaceOfAGoneProcess_Removed()
    {
        if (SiloNetwork.Unavailable() is { } why)
        {
            // Not root or no iproute2: the harness says so and runs on loopback; nothing of its own can be stale.
            Assert.False(string.IsNullOrEmpty(why));
            return;
        }

        // Above any Linux pid_max (2^22), so never a live process.
        const string Stale = "lcs4194999-s0";
        ProcessRunner("ip", "netns", "add", Stale);

        IReadOnlyList<string> removed = SiloNetwork.RemoveStale();

        Assert.Contains(Stale, removed);
        Assert.DoesNotContain(Stale, ProcessRunner("ip", "netns", "list"));
    }

    /// <summary>No silo or redis-server process the run printed is alive, none with its cluster id either, and no namespace or link it named.</summary>
    private static void AssertNothingLeft(string text, int harness, bool namespaces)
    {
        int[] pids = [.. PrintedPid().Matches(text).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];
        Assert.Equal(3, pids.Length); // redis-server and two silos
        Assert.All(pids, pid => Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} is still running:\n{text}"));
        string cluster = $"ClusterId=scaling-{harness}-";
        string[] running = [.. Directory.GetDirectories("/proc").Select(d => Path.Combine(d, "cmdline")).Select(ReadCmdline).Where(c => c.Contains(cluster, StringComparison.Ordinal))];
        Assert.Empty(running);
        if (namespaces)
        {
            Assert.Contains(" network namespaces (lcs", text);
            Assert.Empty(SiloNetwork.Owned(harness));
        }
        else
        {
            Assert.Contains("running on loopback (127.0.0.1), unshaped", text);
        }
    }

    private static string ReadCmdline(string path)
    {
        try
        {
            return File.ReadAllText(path).Replace('\0', ' ');
        }
        catch (IOException)
        {
            return ""; // the process ended while the directory was listed
        }
        catch (UnauthorizedAccessException)
        {
            return "";
        }
    }

    private static int AllowedCores()
    {
        string line = File.ReadLines("/proc/self/status").First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal));
        return line["Cpus_allowed_list:".Length..].Trim().Split(',').Sum(r => r.Contains('-', StringComparison.Ordinal)
            ? int.Parse(r.Split('-')[1], CultureInfo.InvariantCulture) - int.Parse(r.Split('-')[0], CultureInfo.InvariantCulture) + 1
            : 1);
    }

    private static string ProcessRunner(string file, params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = System.Diagnostics.Process.Start(start)!;
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{file} {string.Join(' ', arguments)}: {process.StandardError.ReadToEnd()}");
        return output;
    }

    [GeneratedRegex(@"(?:redis-server pid|silo \d+ pid) (\d+)")]
    private static partial Regex PrintedPid();

    [GeneratedRegex(@"harness pid (\d+)")]
    private static partial Regex HarnessPid();
}
