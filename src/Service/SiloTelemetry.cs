using LongCluster.Grains.Telemetry;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace LongCluster.Service;

/// <summary>
/// A silo's OpenTelemetry: the <c>LongCluster</c> meter and activity source, Orleans' meters and grain-call spans
/// (with its activity propagation, so one trace runs from the API through the coordinator to every shard), the
/// .NET runtime's and ASP.NET Core's meters. Metrics are served as Prometheus text at <c>/metrics</c> on every silo
/// (open, like <c>/healthz</c>: no sequence ids or tensors in it, and a scraper carries no token); metrics and traces
/// are exported through OTLP when <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is set (the exporter's other
/// <c>OTEL_*</c> settings apply, from the environment or configuration).
/// </summary>
internal static class SiloTelemetry
{
    /// <summary>Meters every silo exports beside its own.</summary>
    private static readonly string[] Meters =
    [
        LongClusterTelemetry.Name,
        "Microsoft.Orleans",
        "System.Runtime",
        "Microsoft.AspNetCore.Hosting",
        "Microsoft.AspNetCore.Server.Kestrel",
    ];

    public const string MetricsPath = "/metrics";

    public static void AddTelemetry(this WebApplicationBuilder builder, SiloOptions silo)
    {
        bool otlp = !string.IsNullOrWhiteSpace(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        builder.Services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("longcluster", serviceInstanceId: silo.Name))
            .WithMetrics(metrics =>
            {
                metrics.AddMeter(Meters).AddPrometheusExporter();
                if (otlp)
                {
                    metrics.AddOtlpExporter();
                }
            })
            .WithTracing(tracing =>
            {
                if (otlp)
                {
                    tracing.AddSource(LongClusterTelemetry.Name, "Microsoft.Orleans.Application")
                        .AddAspNetCoreInstrumentation(o => o.Filter = http => !IsProbe(http.Request.Path))
                        .AddOtlpExporter();
                }

                // Without an exporter this silo listens to no source, so no span is made for it: tracing costs nothing.
            });
    }

    /// <summary>Counts every request by route and status (first in the pipeline, so refusals count too) and serves <c>/metrics</c>.</summary>
    public static void MapTelemetry(this WebApplication app, Func<string> silo)
    {
        app.Use(async (context, next) =>
        {
            try
            {
                await next(context).ConfigureAwait(false);
            }
            finally
            {
                if (!IsProbe(context.Request.Path))
                {
                    string route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
                    LongClusterTelemetry.RecordRequest(silo(), context.Request.Method, route, context.Response.StatusCode);
                }
            }
        });
        app.MapPrometheusScrapingEndpoint(MetricsPath);
    }

    /// <summary>Scrapes and health probes: frequent, and not what an operator means by the API's requests.</summary>
    private static bool IsProbe(PathString path) =>
        path.StartsWithSegments(MetricsPath) || path.StartsWithSegments("/healthz") || path.StartsWithSegments("/readyz");
}
