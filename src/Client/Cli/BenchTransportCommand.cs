using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using LongCluster.Runtime.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench transport</c>: silo-to-silo transport between two processes on loopback. This process
/// starts a second <c>longcluster</c> as the receiving silo, then measures one-way 16 MiB frames (throughput,
/// confirmed by a request the receiver answers only after it has read every frame before it) and small
/// request/response round trips (latency percentiles).
/// </summary>
internal static class BenchTransportCommand
{
    private static readonly byte[] CountRequest = "count"u8.ToArray();

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench transport", args, ["frames", "frame-mib", "calls", "protocol"], []);
        string protocol = options.Text("protocol") ?? "tcp";
        if (protocol is not ("tcp" or "http2"))
        {
            throw new UsageException($"bench transport: --protocol must be tcp or http2, got '{protocol}'");
        }

        int frames = options.Int("frames", 64, 1);
        int frameMib = options.Int("frame-mib", 16, 1, 200);
        int calls = options.Int("calls", 20000, 10);
        byte[] secret = RandomNumberGenerator.GetBytes(32);
        var transport = new TransportOptions { ClusterId = "bench", Secret = secret, MaxFrameBytes = (frameMib + 1) * 1024 * 1024 };

        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardInput = true };
        start.ArgumentList.Add(typeof(BenchTransportCommand).Assembly.Location);
        start.ArgumentList.Add("bench");
        start.ArgumentList.Add(protocol == "tcp" ? "transport-server" : "http2-server");
        start.ArgumentList.Add(Convert.ToHexString(secret));
        start.ArgumentList.Add(transport.MaxFrameBytes.ToString(CultureInfo.InvariantCulture));
        using Process server = Process.Start(start)!;
        try
        {
            string? line = server.StandardOutput.ReadLine();
            if (line is null || !line.StartsWith("PORT ", StringComparison.Ordinal))
            {
                throw new IOException($"the receiving silo did not start (said '{line}')");
            }

            int port = int.Parse(line[5..], CultureInfo.InvariantCulture);
            if (protocol == "http2")
            {
                return MeasureHttp2(port, frames, frameMib, stdout);
            }

            PeerConnection peer = PeerConnection.ConnectAsync("127.0.0.1", port, transport, null, default).GetAwaiter().GetResult();
            try
            {
                return Measure(peer, frames, frameMib, calls, stdout);
            }
            finally
            {
                peer.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        finally
        {
            server.StandardInput.Close();
            if (!server.WaitForExit(5000))
            {
                server.Kill();
            }
        }
    }

    /// <summary>The receiving side, started by <see cref="Run"/>: prints its port, serves until its stdin closes.</summary>
    public static int Serve(string[] args, TextWriter stdout)
    {
        var transport = new TransportOptions { ClusterId = "bench", Secret = Convert.FromHexString(args[0]), MaxFrameBytes = int.Parse(args[1], CultureInfo.InvariantCulture) };
        long received = 0;
        TransportServer server = TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), transport, (payload, _) =>
        {
            if (payload.Length > 64)
            {
                Interlocked.Add(ref received, payload.Length);
                return ValueTask.FromResult(Array.Empty<byte>());
            }

            return ValueTask.FromResult(payload.Span.SequenceEqual(CountRequest)
                ? BitConverter.GetBytes(Interlocked.Read(ref received))
                : payload.ToArray());
        }, default).GetAwaiter().GetResult();
        stdout.WriteLine($"PORT {server.Port}");
        stdout.Flush();
        Console.In.ReadToEnd();
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return CliApp.ExitOk;
    }

    /// <summary>The comparison the transport was chosen by: the same frames as HTTP/2 (h2c) request bodies to Kestrel.</summary>
    public static int ServeHttp2(TextWriter stdout)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Limits.Http2.InitialConnectionWindowSize = 16 * 1024 * 1024;
            k.Limits.Http2.InitialStreamWindowSize = 16 * 1024 * 1024;
            k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2);
        });
        WebApplication app = builder.Build();
        var buffer = new byte[1 << 20];
        app.MapPost("/frame", async (HttpRequest request) =>
        {
            long total = 0;
            int read;
            while ((read = await request.Body.ReadAsync(buffer)) > 0)
            {
                total += read;
            }

            return Results.Text(total.ToString(CultureInfo.InvariantCulture));
        });
        app.StartAsync().GetAwaiter().GetResult();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        stdout.WriteLine($"PORT {new Uri(address).Port}");
        stdout.Flush();
        Console.In.ReadToEnd();
        app.StopAsync().GetAwaiter().GetResult();
        return CliApp.ExitOk;
    }

    private static int MeasureHttp2(int port, int frames, int frameMib, TextWriter stdout)
    {
        using var client = new HttpClient(new SocketsHttpHandler { InitialHttp2StreamWindowSize = 16 * 1024 * 1024 })
        {
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        };
        byte[] frame = new byte[frameMib * 1024 * 1024];
        new Random(1).NextBytes(frame);
        long Send()
        {
            using HttpResponseMessage response = client.PostAsync(new Uri($"http://127.0.0.1:{port}/frame"), new ByteArrayContent(frame)).GetAwaiter().GetResult();
            response.EnsureSuccessStatusCode();
            return long.Parse(response.Content.ReadAsStringAsync().GetAwaiter().GetResult(), CultureInfo.InvariantCulture);
        }

        for (int i = 0; i < 4; i++)
        {
            Send();
        }

        long started = Stopwatch.GetTimestamp();
        long bytes = 0;
        for (int i = 0; i < frames; i++)
        {
            bytes += Send();
        }

        double gbps = bytes / Stopwatch.GetElapsedTime(started).TotalSeconds / 1e9;
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"HTTP/2 (h2c) {frames} x {frameMib} MiB request bodies: {gbps:F2} GB/s, confirmed by the receiver"));
        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["protocol"] = "http2", ["throughput_gb_s"] = Math.Round(gbps, 3), ["frame_mib"] = frameMib, ["frames"] = frames }));
        return CliApp.ExitOk;
    }

    private static int Measure(PeerConnection peer, int frames, int frameMib, int calls, TextWriter stdout)
    {
        byte[] frame = new byte[frameMib * 1024 * 1024];
        new Random(1).NextBytes(frame);
        for (int i = 0; i < 4; i++)
        {
            peer.SendOneWayAsync(frame).GetAwaiter().GetResult();
        }

        long before = BitConverter.ToInt64(peer.RequestAsync(CountRequest).GetAwaiter().GetResult());
        long started = Stopwatch.GetTimestamp();
        for (int i = 0; i < frames; i++)
        {
            peer.SendOneWayAsync(frame).GetAwaiter().GetResult();
        }

        long after = BitConverter.ToInt64(peer.RequestAsync(CountRequest).GetAwaiter().GetResult());
        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        long bytes = after - before;
        if (bytes != (long)frames * frame.Length)
        {
            throw new IOException($"receiver counted {bytes} bytes, expected {(long)frames * frame.Length}");
        }

        byte[] small = new byte[16];
        var latencies = new double[calls];
        for (int i = 0; i < 1000; i++)
        {
            peer.RequestAsync(small).GetAwaiter().GetResult();
        }

        for (int i = 0; i < calls; i++)
        {
            long t = Stopwatch.GetTimestamp();
            peer.RequestAsync(small).GetAwaiter().GetResult();
            latencies[i] = Stopwatch.GetElapsedTime(t).TotalMicroseconds;
        }

        Array.Sort(latencies);
        double gbps = bytes / seconds / 1e9;
        double p50 = latencies[calls / 2];
        double p99 = latencies[(int)(calls * 0.99)];
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"one-way {frames} x {frameMib} MiB frames: {gbps:F2} GB/s ({bytes / seconds / 1048576:F0} MiB/s), confirmed by the receiver"));
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"request/response, 16-byte payload, {calls} calls: p50 {p50:F1} us, p99 {p99:F1} us"));
        stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["throughput_gb_s"] = Math.Round(gbps, 3),
            ["frame_mib"] = frameMib,
            ["frames"] = frames,
            ["p50_us"] = Math.Round(p50, 1),
            ["p99_us"] = Math.Round(p99, 1),
            ["calls"] = calls,
        }));
        return CliApp.ExitOk;
    }
}
