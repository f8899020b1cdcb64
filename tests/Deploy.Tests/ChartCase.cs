namespace LongCluster.Deploy.Tests;

/// <summary>A values set the chart is rendered with and what the render must then hold.</summary>
internal sealed record ChartCase(string Values, int Replicas, bool Gpu, bool BundledRedis, string RedisEndpoint, string TokenSecret)
{
    public static IReadOnlyDictionary<string, ChartCase> All { get; } = new[]
    {
        new ChartCase("default", 3, Gpu: false, BundledRedis: true, "lc-longcluster-redis:6379", "lc-longcluster-api-token"),
        new ChartCase("external-redis", 3, Gpu: false, BundledRedis: false, "redis.data.svc.cluster.local:6380", "lc-longcluster-api-token"),
        new ChartCase("gpu", 3, Gpu: true, BundledRedis: true, "lc-longcluster-redis:6379", "lc-longcluster-api-token"),
        new ChartCase("replicas-8", 8, Gpu: false, BundledRedis: true, "lc-longcluster-redis:6379", "team-api-token"),
    }.ToDictionary(c => c.Values);

    public static TheoryData<string> Names => [.. All.Keys];
}
