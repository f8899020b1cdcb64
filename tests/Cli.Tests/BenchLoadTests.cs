using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Cli.Tests;

public sealed class BenchLoadTests
{
    [Fact]
    public void BenchLoad_LocalClusterForSeconds_EveryAnswerRightJsonLast()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int code = CliApp.Run(["bench", "load", "--local-cluster", "2", "--clients", "2", "--seconds", "4", "--seed", "3"], stdout, stderr);

        string text = stdout.ToString();
        Assert.True(code == 0, text + stderr);
        Assert.DoesNotContain('\u001b', text); // no escape codes when not on a terminal
        string[] lines = text.TrimEnd().Split('\n');
        using var json = JsonDocument.Parse(lines[^1]);
        JsonElement root = json.RootElement;
        Assert.True(root.GetProperty("requests").GetInt64() > 0, text);
        Assert.True(root.GetProperty("checked").GetInt64() > 0, text);
        Assert.Equal(0, root.GetProperty("wrong").GetInt64());
        Assert.Equal(0, root.GetProperty("errors").GetInt64());
        Assert.Equal(2, root.GetProperty("clients").GetInt32());
        Assert.Equal(2, root.GetProperty("silos").GetInt32());
        Assert.True(root.GetProperty("ops").GetProperty("create").GetProperty("count").GetInt32() > 0, text);
        // Read at the start and at the end; every figure either a number or null (a silo without /metrics).
        Assert.Equal(2, root.GetProperty("sample_s").GetArrayLength());
        Assert.Equal(2, root.GetProperty("heap_mb").GetArrayLength());
        Assert.Equal(2, root.GetProperty("rss_mb").GetArrayLength());
        Assert.All(root.GetProperty("local_rss_mb").EnumerateArray(), v => Assert.True(v.GetDouble() > 0));
        Assert.Contains(lines, l => l.StartsWith("| operation |", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("     start: 0 requests", StringComparison.Ordinal));
    }

    [Fact]
    public async Task BenchLoad_SigTerm_StopsEarlyAndStillReports()
    {
        using var cli = StreamingProcess.Start("bench", "load", "--local-cluster", "2", "--clients", "2", "--minutes", "10");
        await cli.WaitForLineAsync(l => l.Contains("start: 0 requests", StringComparison.Ordinal), TimeSpan.FromMinutes(1));
        cli.Signal("TERM");

        Assert.Equal(0, await cli.ExitCodeAsync(TimeSpan.FromMinutes(1)));
        Assert.Contains(cli.Lines, l => l == "bench load: stopped by a signal");
        using var json = JsonDocument.Parse(cli.Lines.Last(l => !string.IsNullOrEmpty(l)));
        Assert.True(json.RootElement.GetProperty("stopped").GetBoolean());
        Assert.Equal(0, json.RootElement.GetProperty("wrong").GetInt64());
        Assert.Equal(0, json.RootElement.GetProperty("errors").GetInt64());
        Assert.Equal(2, json.RootElement.GetProperty("sample_s").GetArrayLength()); // at the start and at the stop
    }

    [Fact]
    public void Pick_ManySeeds_EveryShapeIsOneTheServiceAccepts()
    {
        var random = new Random(5);
        for (int i = 0; i < 2000; i++)
        {
            LoadShape shape = LoadShape.Pick(random, 4);
            SequenceSpec spec = shape.Spec;
            string where = shape.ToString();
            Assert.InRange(shape.PromptTokens, LoadShape.MinTokens, LoadShape.MaxTokens);
            Assert.All(shape.Chunks, c => Assert.True(c >= 1, where));
            Assert.InRange(spec.Shards, 1, 4);
            Assert.Equal(0, spec.QueryHeads % spec.KeyValueHeads);
            ContextLayout layout = ContextLayout.Parse(spec.Layout);
            foreach (int tokens in shape.Chunks)
            {
                _ = new LayoutPlan(layout, spec.Shards, tokens, spec.QueryHeads, spec.KeyValueHeads);
            }

            AttentionMask mask = AttentionMask.Parse(spec.Mask);
            if (mask.Kind == MaskKind.Full && !mask.Document)
            {
                Assert.Equal([shape.PromptTokens], shape.Chunks);
                Assert.Equal(0, shape.DecodeSteps);
            }

            if (mask.Kind == MaskKind.Prefix)
            {
                Assert.True(mask.Size <= shape.Chunks[0], where);
            }

            if (!mask.Document)
            {
                Assert.Null(shape.Documents);
                continue;
            }

            int[] documents = shape.Documents!;
            Assert.Equal(shape.TotalTokens, documents.Length);
            Assert.All(Enumerable.Range(1, documents.Length - 1), t => Assert.True(documents[t] >= documents[t - 1], where));
            int first = 0;
            foreach (int count in shape.Chunks.SkipLast(1))
            {
                first += count;
                Assert.True(documents[first] > documents[first - 1], $"{where}: chunk at {first} starts no new document");
            }

            if (mask.Kind == MaskKind.Full)
            {
                Assert.All(Enumerable.Range(shape.PromptTokens, shape.DecodeSteps), t => Assert.True(documents[t] > documents[t - 1], where));
            }
        }
    }

    [Fact]
    public void Pick_SameSeed_SameShapes()
    {
        var a = new Random(11);
        var b = new Random(11);
        for (int i = 0; i < 50; i++)
        {
            LoadShape x = LoadShape.Pick(a, 3);
            LoadShape y = LoadShape.Pick(b, 3);
            Assert.Equal(x.ToString(), y.ToString());
            Assert.Equal(x.Documents, y.Documents);
        }
    }

    [Theory]
    [InlineData(429, "limit_exceeded", null, "429 limit_exceeded", true)]
    [InlineData(503, "unavailable", null, "503 unavailable", false)]
    [InlineData(500, "internal", null, "500 internal", false)]
    [InlineData(409, "conflict", null, "409 conflict", false)]
    [InlineData(0, "unavailable", "connection", "connection", false)]
    [InlineData(0, "unavailable", "timeout", "timeout", false)]
    public void Classify_Failure_CodeAndWhetherRefused(int status, string code, string? inner, string expected, bool refused)
    {
        Exception? cause = inner switch
        {
            "connection" => new HttpRequestException(HttpRequestError.ConnectionError, "refused"),
            "timeout" => new TaskCanceledException("deadline"),
            _ => null,
        };
        var e = new LongClusterException(status, new ApiError("failed", null, status is 0 or 503, code), cause);

        Assert.Equal((expected, refused), LoadStats.Classify(e));
    }

    [Fact]
    public async Task TimeAsync_RefusedAndFailed_CountedApartAndTheSequenceGivenUp()
    {
        var stats = new LoadStats();
        await Assert.ThrowsAsync<LoadFailure>(() => stats.TimeAsync("create", "s", () => Task.FromException<int>(
            new LongClusterException(429, new ApiError("full", "tokens", false, "limit_exceeded"))), CancellationToken.None));
        await Assert.ThrowsAsync<LoadFailure>(() => stats.TimeAsync("run", "s", () => Task.FromException<int>(
            new LongClusterException(500, new ApiError("boom", null, false, "internal"))), CancellationToken.None));
        Assert.Equal(7, await stats.TimeAsync("read", "s", () => Task.FromResult(7), CancellationToken.None));

        Assert.Equal(3, stats.Requests);
        Assert.Equal(1, stats.Refused);
        Assert.Equal(1, stats.Errors);
        Assert.Equal(new Dictionary<string, int> { ["429 limit_exceeded"] = 1, ["500 internal"] = 1 }, stats.FailuresByCode());
        Assert.Equal(["read"], stats.Latencies().Keys);
        Assert.Equal(["run of s: 500 internal: boom"], stats.ErrorExamples());
    }

    [Fact]
    public void Check_DifferentOutput_CountedWrongWithWhatDiffered()
    {
        var stats = new LoadStats();
        Assert.True(stats.Check("same", [1f, 2f], [1f, 2f], [0.5f], [0.5f], 1e-4));
        Assert.False(stats.Check("layer 1", [1f, 2f], [1f, 2.5f], [0.5f], [0.5f], 1e-4));

        Assert.Equal(2, stats.Checked);
        Assert.Equal(1, stats.Wrong);
        Assert.Equal(["layer 1: O rel error 2.50E-001, LSE rel error 0.00E+000 (tolerance 1E-004)"], stats.WrongExamples());
    }

    [Theory]
    [InlineData(new[] { 5.0 }, 0.5, 5.0)]
    [InlineData(new[] { 1.0, 2, 3, 4 }, 0.5, 2.0)]
    [InlineData(new[] { 1.0, 2, 3, 4 }, 0.99, 4.0)]
    public void Percentile_NearestRank(double[] sorted, double p, double expected)
    {
        Assert.Equal(expected, LoadStats.Percentile(sorted, p));
    }
}
