using System.Globalization;
using System.Security.Cryptography;
using LongCluster.Service;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster silo</c>: one silo with the attention service, for users who run their own cluster — Orleans'
/// development clustering (a cluster of one, or joining <c>--primary HOST:PORT</c>) or <c>--redis HOST:PORT</c>
/// shared by every silo, which also needs the cluster's TLS credentials. The same host as <c>longcluster-silo</c>;
/// runs until Ctrl+C or SIGTERM, then drains and leaves gracefully.
/// </summary>
internal static class SiloCommand
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        CommandLine options = CommandLine.Parse(
            "silo", args, ["redis", "redis-password", "cluster-id", "host", "port", "http-port", "token", "name", "primary", "tls-cert", "tls-key", "tls-ca"], ["redis-tls"]);
        string? token = options.Text("token") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN");
        if (options.Has("redis") && token is null)
        {
            throw new UsageException("silo: with --redis, every silo needs the same --token (or LONGCLUSTER_TOKEN)");
        }

        if (token is null)
        {
            token = Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            stdout.WriteLine($"silo: generated API token {token} (pass --token to choose one)");
        }

        var silo = new SiloOptions
        {
            ClusterId = options.Text("cluster-id") ?? "longcluster",
            Host = options.Text("host") ?? "127.0.0.1",
            SiloPort = options.Int("port", 11111, 1, 65535),
            HttpPort = options.Int("http-port", 8080, 0, 65535),
            PrimarySilo = options.Text("primary") ?? "",
            Tls = new SiloTlsOptions { CertificateFile = options.Text("tls-cert") ?? "", KeyFile = options.Text("tls-key") ?? "", AuthorityFile = options.Text("tls-ca") ?? "" },
        };
        silo.ServiceId = silo.ClusterId;
        if (options.Text("name") is { } name)
        {
            silo.Name = name;
        }

        if (options.Text("redis") is { } redis)
        {
            int colon = redis.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(redis.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _))
            {
                throw new UsageException($"silo: --redis expects HOST:PORT, got '{redis}'");
            }

            silo.Clustering = SiloOptions.RedisClustering;
            silo.Redis = redis
                + (options.Text("redis-password") is { } password ? $",password={password}" : "")
                + (options.Has("redis-tls") ? ",ssl=true" : "");
        }

        WebApplication app;
        try
        {
            app = SiloHost.Build(WebApplication.CreateSlimBuilder(), silo, new Grains.AttentionServiceOptions { ApiToken = token });
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"silo: {e.Message}");
        }

        try
        {
            app.AnnounceWhenReady().Start();
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            stderr.WriteLine($"error: silo: could not start: {SiloHost.Reasons(e)}");
            return CliApp.ExitFailed;
        }

        app.WaitForShutdown();
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        return CliApp.ExitOk;
    }
}
