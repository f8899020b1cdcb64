using System.Globalization;
using System.Security.Cryptography;
using LongCluster.Cli.Processes;
using LongCluster.Service;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster local-cluster</c>: N silos on this machine — in this process on the embedded default, or with
/// <c>--processes</c> as N <c>longcluster-silo</c> processes clustered through a redis-server the command starts on a
/// free port, with mutual TLS from a certificate authority made for the run. Prints every silo and its health URLs,
/// runs until Ctrl+C or SIGTERM (or <c>--for S</c> seconds), then stops the silos gracefully and, with
/// <c>--processes</c>, the redis-server, leaving no process behind.
/// </summary>
internal static class LocalClusterCommand
{
    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("local-cluster", args, ["silos", "for"], ["processes"]);
        int silos = options.Int("silos", 3, 1, 64);
        int seconds = options.Int("for", -1, 0);
        using var stop = new StopSignal();
        return options.Has("processes")
            ? RunProcessesAsync(silos, seconds, stdout, stop.Token).GetAwaiter().GetResult()
            : RunInProcessAsync(silos, seconds, stdout, stop.Token).GetAwaiter().GetResult();
    }

    private static async Task<int> RunInProcessAsync(int silos, int seconds, TextWriter stdout, CancellationToken stop)
    {
        await using LocalAttentionCluster service = await LocalAttentionCluster.StartAsync(silos, cancellationToken: stop).ConfigureAwait(false);
        foreach (LocalSilo silo in service.Silos)
        {
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"silo {silo.Address}: {silo.Endpoint} (/readyz, /v1/sequences)"));
        }

        stdout.WriteLine($"{silos} silos in this process, development clustering; all ready; API token {service.ApiToken}");
        await WaitAsync(seconds, stop).ConfigureAwait(false);
        stdout.WriteLine("stopping: every silo leaves the cluster");
        return CliApp.ExitOk;
    }

    private static async Task<int> RunProcessesAsync(int silos, int seconds, TextWriter stdout, CancellationToken stop)
    {
        DirectoryInfo credentials = Directory.CreateTempSubdirectory("lc-tls-");
        try
        {
            ClusterCertificates authority = ClusterCertificates.Create(credentials.FullName);
            var settings = new Dictionary<string, string>
            {
                ["ClusterId"] = "local",
                ["ServiceId"] = "local",
                ["Service:ApiToken"] = Convert.ToHexString(RandomNumberGenerator.GetBytes(16)),
            };
            string siloAssembly = Path.Combine(AppContext.BaseDirectory, "longcluster-silo.dll");
            await using SiloProcessCluster cluster = await SiloProcessCluster.StartAsync(silos, siloAssembly, settings, TimeSpan.FromSeconds(90), authority).ConfigureAwait(false);
            foreach ((string address, SiloProcess silo) in cluster.Addresses.Zip(cluster.Silos))
            {
                stdout.WriteLine($"silo process {address} (pid {silo.ProcessId}): {silo.HttpEndpoint} (/readyz, /v1/sequences)");
            }

            stdout.WriteLine(string.Create(
                CultureInfo.InvariantCulture, $"{silos} silo processes clustered through redis-server (pid {cluster.Redis.ProcessId}) on port {cluster.Redis.Port}, mutual TLS; all ready; API token {settings["Service:ApiToken"]}"));
            await WaitAsync(seconds, stop).ConfigureAwait(false);
            int[] codes = await cluster.StopAsync(TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            stdout.WriteLine($"stopped: exit codes {string.Join(", ", codes)}");
            return codes.All(c => c == 0) ? CliApp.ExitOk : CliApp.ExitFailed;
        }
        finally
        {
            credentials.Delete(recursive: true);
        }
    }

    private static async Task WaitAsync(int seconds, CancellationToken stop)
    {
        try
        {
            await Task.Delay(seconds < 0 ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(seconds), stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }
}
