using System.Text.Json;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;

namespace LongCluster.Cli.Tests;

public sealed class PlanModelTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("lc-plan-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void PlanModel_DatacentreProfile_TableJsonAndPng()
    {
        string png = Path.Combine(_directory, "plots", "scaling.png");
        (int code, string stdout, string stderr) = Run(
            "plan", "--model", "h200-400g", "--nodes", "1,2,8", "--tokens", "4096", "--hq", "4", "--hkv", "4", "--d", "64",
            "--layouts", "zigzag,contiguous,ulysses", "--png", png);

        Assert.True(code == 0, stderr);
        Assert.Contains("plan --model h200-400g: T=4096 Hq=4 Hkv=4 d=64 f32 mask=causal", stdout, StringComparison.Ordinal);
        Assert.Contains("cannot run: layout ulysses: the Ulysses degree 8 must divide the query heads (4)", stdout, StringComparison.Ordinal);
        using JsonDocument json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        JsonElement[] points = [.. json.RootElement.GetProperty("points").EnumerateArray()];
        Assert.Equal(9, points.Length);
        JsonElement zigzag8 = points.Single(p => p.GetProperty("nodes").GetInt32() == 8 && p.GetProperty("layout").GetString() == "zigzag");
        LayerPrediction expected = LayerCostModel.Predict(
            new LayoutPlan(ContextLayout.Zigzag, 8, 4096, 4, 4), AttentionMask.Causal, 64, 4, HardwareProfile.Load("h200-400g"));
        Assert.Equal(Math.Round(expected.LayerMs, 6), zigzag8.GetProperty("layer_ms").GetDouble());
        Assert.Equal(Math.Round(expected.Efficiency, 6), zigzag8.GetProperty("efficiency").GetDouble());
        JsonElement ulysses8 = points.Single(p => p.GetProperty("nodes").GetInt32() == 8 && p.GetProperty("layout").GetString() == "ulysses");
        Assert.Equal("layout ulysses: the Ulysses degree 8 must divide the query heads (4)", ulysses8.GetProperty("reason").GetString());
        Assert.False(ulysses8.TryGetProperty("layer_ms", out _));

        byte[] bytes = File.ReadAllBytes(png);
        Assert.True(bytes.Length > 1000, $"{bytes.Length} bytes");
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, bytes[..8]);
    }

    [Fact]
    public void PlanModel_ProfileFile_UsedAsWritten()
    {
        string path = Path.Combine(_directory, "slow.json");
        HardwareProfile slow = HardwareProfile.Load("h200-400g") with { Name = "slow", KernelGflops = 1 };
        File.WriteAllText(path, slow.ToJson());

        (int code, string stdout, string stderr) = Run("plan", "--model", path, "--nodes", "2", "--tokens", "1024", "--layouts", "contiguous", "--mask", "full", "--hq", "1", "--d", "64");

        Assert.True(code == 0, stderr);
        using JsonDocument json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        Assert.Equal("slow", json.RootElement.GetProperty("profile").GetString());
        // 512 · 512 pairs per step · 4 · 64 FLOP at 1 GFLOP/s = 67.108864 ms, two steps, plus the profile's 2 · 10 µs
        // per step and 50 µs per layer; the 266,240-byte block hides behind the compute.
        Assert.Equal(134.287728, json.RootElement.GetProperty("points")[0].GetProperty("layer_ms").GetDouble(), 6);
    }

    [Fact]
    public void PlanModel_BadProfile_Exit2NamesTheField()
    {
        string path = Path.Combine(_directory, "bad.json");
        File.WriteAllText(path, HardwareProfile.Load("h200-400g").ToJson().Replace("\"linkGbitPerSecond\": 400", "\"linkGbitPerSecond\": 0", StringComparison.Ordinal));

        (int code, string stdout, string stderr) = Run("plan", "--model", path);

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Contains($"profile {path}: field 'linkGbitPerSecond': expected a number > 0, got 0", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new[] { "plan", "--model", "h200-400g", "--shards", "4" }, "plan: --shards does not go with --model")]
    [InlineData(new[] { "plan", "--tokens", "64", "--shards", "2", "--nodes", "1,2" }, "plan: --nodes needs --model")]
    [InlineData(new[] { "plan", "--model", "h200-400g", "--nodes", "1,x" }, "plan: --nodes must be a comma-separated list of integers in 1..1048576, got '1,x'")]
    [InlineData(new[] { "plan", "--model", "h200-400g", "--layouts", "zigzag,ring" }, "plan: --layouts: layout 'ring' is not one of")]
    [InlineData(new[] { "plan", "--calibrate", "--tokens", "64" }, "plan: --tokens does not go with --calibrate")]
    public void Plan_OptionsOfAnotherMode_Exit2(string[] args, string expected)
    {
        (int code, _, string stderr) = Run(args);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
