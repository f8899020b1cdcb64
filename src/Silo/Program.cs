using LongCluster.Runtime.Hosting;
using LongCluster.Service;
using Microsoft.Extensions.Hosting;

// Configuration: appsettings.json, environment (LongCluster__Secret, LongCluster__Service__ApiToken, ...), command line
// (--LongCluster:Secret=...).
HostApplicationBuilder builder = Host.CreateApplicationBuilder(args);
builder.Services.AddLongClusterSilo(builder.Configuration.GetSection("LongCluster"));
builder.Services.AddAttentionService(builder.Configuration.GetSection("LongCluster:Service"));
await builder.Build().RunAsync();
