using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using LongCluster.Cli.Processes;
using LongCluster.Grains.Diagnostics;
using LongCluster.Service;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench transport</c>: Orleans grain calls between two silos the way the ring uses them — frames of a
/// KV block's size sent one at a time (GB/s), and small calls (latency p50/p99). By default the silos are two
/// <c>longcluster-silo</c> processes clustered through a redis-server with mutual TLS, as in production;
/// <c>--in-process</c> puts both in this process (still TCP on loopback, no TLS).
/// </summary>
internal static class BenchTransportCommand
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench transport", args, ["frames", "frame-mib", "calls"], ["in-process"]);
        int frames = options.Int("frames", 64, 1);
        int frameMib = options.Int("frame-mib", 16, 1, 512);
        int calls = options.Int("calls", 20000, 10);
        TransferFigures figures = options.Has("in-process")
            ? InProcessAsync(frames, frameMib, calls).GetAwaiter().GetResult()
            : ProcessesAsync(frames, frameMib, calls).GetAwaiter().GetResult();
        string mode = options.Has("in-process") ? "two silos in this process (loopback TCP)" : "two silo processes (loopback TCP, mutual TLS)";
        stdout.WriteLine($"bench transport: Orleans grain calls between {mode}, {figures.From} -> {figures.To}");
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {figures.Frames} frames of {figures.FrameBytes / 1048576.0:0.#} MiB, one at a time: {figures.GigabytesPerSecond:0.00} GB/s ({figures.FrameSeconds:0.00} s)"));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {figures.Calls} small calls: p50 {figures.P50Microseconds:0} us, p99 {figures.P99Microseconds:0} us"));
        stdout.WriteLine(JsonSerializer.Serialize(new
        {
            mode = options.Has("in-process") ? "in-process" : "processes",
            frames = figures.Frames,
            frame_bytes = figures.FrameBytes,
            gbps = Math.Round(figures.GigabytesPerSecond, 3),
            calls = figures.Calls,
            p50_us = Math.Round(figures.P50Microseconds, 1),
            p99_us = Math.Round(figures.P99Microseconds, 1),
        }));
        return CliApp.ExitOk;
    }

    internal static async Task<TransferFigures> InProcessAsync(int frames, int frameMib, int calls)
    {
        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(2).ConfigureAwait(false);
        return await MeasureAsync(cluster.Endpoints[0], cluster.ApiToken, frames, frameMib, calls).ConfigureAwait(false);
    }

    private static async Task<TransferFigures> ProcessesAsync(int frames, int frameMib, int calls)
    {
        DirectoryInfo credentials = Directory.CreateTempSubdirectory("lc-tls-");
        try
        {
            string token = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            var settings = new Dictionary<string, string> { ["ClusterId"] = "bench", ["ServiceId"] = "bench", ["Service:ApiToken"] = token };
            await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(
                2, Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll"), settings, TimeSpan.FromSeconds(90), ClusterCertificates.Create(credentials.FullName)).ConfigureAwait(false);
            TransferFigures figures = await MeasureAsync(cluster.Silos[0].HttpEndpoint!, token, frames, frameMib, calls).ConfigureAwait(false);
            await cluster.StopAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            return figures;
        }
        finally
        {
            credentials.Delete(recursive: true);
        }
    }

    private static async Task<TransferFigures> MeasureAsync(Uri silo, string token, int frames, int frameMib, int calls)
    {
        using var http = new HttpClient { BaseAddress = silo, Timeout = TimeSpan.FromMinutes(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using HttpResponseMessage response = await http.PostAsync(
            string.Create(CultureInfo.InvariantCulture, $"v1/diagnostics/transfer?frames={frames}&frameMib={frameMib}&calls={calls}"), null).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new IOException($"bench transport: the silo answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync().ConfigureAwait(false)}");
        }

        return (await response.Content.ReadFromJsonAsync<TransferFigures>(Json).ConfigureAwait(false))!;
    }
}
