namespace LongCluster.Deploy.Tests;

/// <summary>Bad values fail at render (and so at <c>helm install</c>) with the schema's or the chart's message naming the value.</summary>
public sealed class ChartValuesTests
{
    private const string SchemaFailure = "values don't meet the specifications of the schema";

    [Theory]
    [InlineData("replicaCount=-1", "at '/replicaCount': minimum: got -1, want 1")]
    [InlineData("apiToken.existingSecret.enabled=true", "at '/apiToken/existingSecret/name': minLength: got 0, want 1")]
    [InlineData("tls.existingSecret.enabled=true", "at '/tls/existingSecret/name': minLength: got 0, want 1")]
    [InlineData("backend=cuda", "at '/backend'")]
    [InlineData("clusterId=not a label", "at '/clusterId'")]
    [InlineData("drain.shutdownTimeoutSeconds=0", "at '/drain/shutdownTimeoutSeconds': minimum")]
    public async Task Template_ValueAgainstSchema_FailsNamingIt(string set, string message)
    {
        ProcessResult render = await Helm.TemplateAsync("default", set);

        Assert.NotEqual(0, render.ExitCode);
        Assert.Contains(SchemaFailure, render.Stderr);
        Assert.Contains(message, render.Stderr);
        Assert.Empty(render.Stdout);
    }

    [Theory]
    [InlineData("redis.external.host: an external Redis (redis.bundled=false) needs its host", "redis.bundled=false")]
    [InlineData("redis.auth.existingSecret: an external Redis's password comes from your Secret", "redis.bundled=false", "redis.external.host=redis.example")]
    public async Task Template_ExternalRedisIncomplete_FailsWithTheChartsMessage(string message, params string[] sets)
    {
        ProcessResult render = await Helm.TemplateAsync("default", sets);

        Assert.NotEqual(0, render.ExitCode);
        Assert.Contains(message, render.Stderr);
    }

    [Fact]
    public async Task Template_ExternalRedisWithoutPassword_ConnectsWithoutOne()
    {
        Manifests render = await ChartTests.RenderAsync("default", "redis.bundled=false", "redis.external.host=redis.example", "redis.auth.enabled=false");

        string env = render.Single("StatefulSet").ToString();
        Assert.Contains("redis.example:6379", env);
        Assert.DoesNotContain("REDIS_PASSWORD", env);
        Assert.Empty(render.OfKind("Deployment"));
    }
}
