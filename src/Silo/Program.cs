using LongCluster.Service;
using Microsoft.AspNetCore.Builder;

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

await app.AnnounceWhenReady().RunAsync();
return 0;
