using LongCluster.Service;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Hosting;

// Configuration: appsettings.json, environment (LongCluster__Clustering, LongCluster__Redis, LongCluster__Tls__…,
// LongCluster__Service__ApiToken, ...), command line (--LongCluster:Redis=...). See README, Configuration.
WebApplication app;
try
{
    app = SiloHost.Build(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"longcluster-silo: {e.Message}");
    return 2;
}

try
{
    await app.AnnounceWhenReady().StartAsync();
}
catch (Exception e) when (e is not OperationCanceledException)
{
    // A silo that cannot start (its port taken, Redis unreachable, a certificate it cannot read) says why in one
    // line, last, where a supervisor's log tail shows it; the whole exception comes before it.
    Console.Error.WriteLine(e);
    Console.Error.WriteLine($"longcluster-silo: could not start: {SiloHost.Reasons(e)}");
    return 1;
}

await app.WaitForShutdownAsync();
await app.DisposeAsync();
return 0;
