namespace LongCluster.Deploy.Tests;

/// <summary>deploy/k8s/longcluster.yaml is exactly what deploy/k8s/render.sh makes from the chart now.</summary>
public sealed class ManifestTests
{
    [Fact]
    public async Task DeployK8s_EqualsFreshRender()
    {
        ProcessResult render = await ProcessRunner.RunAsync("bash", [Path.Combine(Repository.Root, "deploy", "k8s", "render.sh")], TimeSpan.FromMinutes(2),
            new Dictionary<string, string> { [Helm.EnvironmentVariable] = Helm.Path });
        Assert.True(render.ExitCode == 0, render.ToString());

        string committed = await File.ReadAllTextAsync(Path.Combine(Repository.Root, "deploy", "k8s", "longcluster.yaml"));
        Assert.True(committed == render.Stdout, "deploy/k8s/longcluster.yaml differs from a fresh render: run deploy/k8s/render.sh > deploy/k8s/longcluster.yaml");
    }

    [Fact]
    public async Task DeployK8s_NamesSecretsAndHoldsNone()
    {
        Manifests manifests = Manifests.Parse(await File.ReadAllTextAsync(Path.Combine(Repository.Root, "deploy", "k8s", "longcluster.yaml")));

        Assert.Empty(manifests.OfKind("Secret"));
        string set = manifests.Single("StatefulSet").ToString();
        Assert.Contains("longcluster-api-token", set);
        Assert.Contains("longcluster-tls", set);
        Assert.Contains("longcluster-redis", set);
        Assert.All(manifests.Objects, o => Assert.Equal("longcluster", o.Map("metadata").Text("namespace")));
    }
}
