using System.Globalization;
using System.Security.Cryptography;
using LongCluster.Runtime.Hosting;
using LongCluster.Service;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster silo</c>: one silo with the attention service, for users who run their own cluster — in-memory
/// membership (a cluster of one) or <c>--redis HOST:PORT</c> shared by every silo. The same host as
/// <c>longcluster-silo</c>; runs until Ctrl+C or SIGTERM, then leaves gracefully.
/// </summary>
internal static class SiloCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("silo", args, ["redis", "cluster-id", "host", "port", "http-port", "secret", "token", "name"], []);
        string? secret = options.Text("secret") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_SECRET");
        string? token = options.Text("token") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN");
        if (options.Has("redis") && (secret is null || token is null))
        {
            throw new UsageException("silo: with --redis, every silo needs the same --secret and --token (or LONGCLUSTER_SECRET and LONGCLUSTER_TOKEN)");
        }

        if (secret is null || token is null)
        {
            secret ??= Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            token ??= Convert.ToHexString(RandomNumberGenerator.GetBytes(16));
            stdout.WriteLine($"silo: generated API token {token} (pass --token to choose one)");
        }

        var settings = new Dictionary<string, string?>
        {
            ["LongCluster:ClusterId"] = options.Text("cluster-id") ?? "longcluster",
            ["LongCluster:Host"] = options.Text("host") ?? "127.0.0.1",
            ["LongCluster:SiloPort"] = options.Int("port", 11111, 0, 65535).ToString(CultureInfo.InvariantCulture),
            ["LongCluster:HttpPort"] = options.Int("http-port", 8080, 0, 65535).ToString(CultureInfo.InvariantCulture),
            ["LongCluster:Secret"] = secret,
            ["LongCluster:Service:ApiToken"] = token,
        };
        if (options.Text("name") is { } name)
        {
            settings["LongCluster:Name"] = name;
        }

        if (options.Text("redis") is { } redis)
        {
            int colon = redis.LastIndexOf(':');
            if (colon <= 0 || !int.TryParse(redis.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port))
            {
                throw new UsageException($"silo: --redis expects HOST:PORT, got '{redis}'");
            }

            settings["LongCluster:Membership"] = "Redis";
            settings["LongCluster:Redis:Host"] = redis[..colon];
            settings["LongCluster:Redis:Port"] = port.ToString(CultureInfo.InvariantCulture);
        }

        HostApplicationBuilder builder = Host.CreateApplicationBuilder([]);
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Services.AddLongClusterSilo(builder.Configuration.GetSection("LongCluster"));
        builder.Services.AddAttentionService(builder.Configuration.GetSection("LongCluster:Service"));
        builder.Build().Run();
        return CliApp.ExitOk;
    }
}
