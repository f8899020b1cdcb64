using LongCluster.Runtime.Hosting;
using Microsoft.Extensions.Hosting;

// Configuration: appsettings.json, environment (LongCluster__Secret, ...), command line (--LongCluster:Secret=...).
HostApplicationBuilder builder = Host.CreateApplicationBuilder(args);
builder.Services.AddLongClusterSilo(builder.Configuration.GetSection("LongCluster"));
await builder.Build().RunAsync();
