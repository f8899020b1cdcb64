using System.Globalization;
using System.Text;
using YamlDotNet.RepresentationModel;

namespace LongCluster.Deploy.Tests;

/// <summary>helm/longcluster linted and rendered by a real helm over the default values and three others, and the rendered objects checked.</summary>
public sealed class ChartTests
{
    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Lint_Strict_Passes(string values)
    {
        var arguments = new List<string> { "lint", "--strict", Repository.Chart, "--namespace", "lc-test" };
        if (values != "default")
        {
            arguments.AddRange(["-f", Repository.ValuesFile(values)]);
        }

        ProcessResult lint = await Helm.RunAsync([.. arguments]);

        Assert.True(lint.ExitCode == 0, lint.ToString());
        Assert.Contains("0 chart(s) failed", lint.Stdout);
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_SilosCarryOrleansKubernetesHostingIdentity(string values)
    {
        ChartCase expected = ChartCase.All[values];
        Manifests render = await RenderAsync(values);
        YamlMappingNode set = render.Single("StatefulSet");
        YamlMappingNode pod = set.Map("spec").Map("template");
        YamlMappingNode labels = pod.Map("metadata").Map("labels");
        YamlMappingNode silo = Silo(set);

        Assert.Equal(expected.Replicas.ToString(CultureInfo.InvariantCulture), set.Map("spec").Text("replicas"));
        Assert.Equal("longcluster", labels.Text("orleans/serviceId"));
        Assert.Equal("longcluster", labels.Text("orleans/clusterId"));
        Assert.Equal(labels.Text("orleans/serviceId"), silo.Env("ORLEANS_SERVICE_ID").Text("value"));
        Assert.Equal(labels.Text("orleans/clusterId"), silo.Env("ORLEANS_CLUSTER_ID").Text("value"));
        Assert.Equal(labels.Text("orleans/serviceId"), silo.Env("LongCluster__ServiceId").Text("value"));
        Assert.Equal(labels.Text("orleans/clusterId"), silo.Env("LongCluster__ClusterId").Text("value"));
        Assert.Equal("Kubernetes", silo.Env("LongCluster__Clustering").Text("value"));
        Assert.Equal("metadata.namespace", silo.Env("POD_NAMESPACE").Map("valueFrom").Map("fieldRef").Text("fieldPath"));
        Assert.Equal("metadata.name", silo.Env("POD_NAME").Map("valueFrom").Map("fieldRef").Text("fieldPath"));
        Assert.Equal("status.podIP", silo.Env("POD_IP").Map("valueFrom").Map("fieldRef").Text("fieldPath"));
        Assert.Equal("longcluster-silo:0.1.0", silo.Text("image"));

        // The Services and the disruption budget select exactly these pods.
        foreach (YamlMappingNode selector in render.OfKind("Service").Where(s => s.Map("metadata").Text("name").StartsWith("lc-longcluster", StringComparison.Ordinal) && !s.Map("metadata").Text("name").EndsWith("-redis", StringComparison.Ordinal))
            .Select(s => s.Map("spec").Map("selector")).Append(render.Single("PodDisruptionBudget").Map("spec").Map("selector").Map("matchLabels")))
        {
            Assert.All(selector.Children, p => Assert.Equal(((YamlScalarNode)p.Value).Value, labels.Text(((YamlScalarNode)p.Key).Value!)));
        }

        Assert.Equal("None", render.Single("Service", "-silo").Map("spec").Text("clusterIP"));
        Assert.Equal(set.Map("spec").Text("serviceName"), render.Single("Service", "-silo").Map("metadata").Text("name"));
        Assert.Equal("http", render.Single("Service", "lc-longcluster").Map("spec").Seq("ports").Children[0].Text("targetPort"));
        Assert.Equal("1", render.Single("PodDisruptionBudget").Map("spec").Text("maxUnavailable"));
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_ProbesAndDrainOutlastShutdownTimeout(string values)
    {
        YamlMappingNode set = (await RenderAsync(values)).Single("StatefulSet");
        YamlMappingNode silo = Silo(set);

        Assert.Equal("/readyz", silo.Map("readinessProbe").Map("httpGet").Text("path"));
        Assert.Equal("/healthz", silo.Map("livenessProbe").Map("httpGet").Text("path"));
        Assert.Equal("/healthz", silo.Map("startupProbe").Map("httpGet").Text("path"));
        Assert.All(new[] { "readinessProbe", "livenessProbe", "startupProbe" }, p => Assert.Equal("http", silo.Map(p).Map("httpGet").Text("port")));
        Assert.Contains(silo.Seq("ports").Children, p => p.Text("name") == "http" && p.Text("containerPort") == silo.Env("LongCluster__HttpPort").Text("value"));
        Assert.Contains(silo.Seq("ports").Children, p => p.Text("name") == "silo" && p.Text("containerPort") == silo.Env("LongCluster__SiloPort").Text("value"));

        string[] preStop = [.. silo.Map("lifecycle").Map("preStop").Map("exec").Seq("command").Texts()];
        Assert.Equal("sleep", preStop[0]);
        int preStopSeconds = int.Parse(preStop[1], CultureInfo.InvariantCulture);
        Assert.True(preStopSeconds > 0);
        TimeSpan shutdownTimeout = TimeSpan.Parse(silo.Env("LongCluster__ShutdownTimeout").Text("value"), CultureInfo.InvariantCulture);
        Assert.Equal(TimeSpan.FromSeconds(30), shutdownTimeout);
        // The grace period runs from the start of preStop: the sleep and the whole drain must fit, with room to spare.
        int grace = int.Parse(set.Map("spec").Map("template").Map("spec").Text("terminationGracePeriodSeconds"), CultureInfo.InvariantCulture);
        Assert.True(grace > preStopSeconds + shutdownTimeout.TotalSeconds, $"grace {grace} s, preStop {preStopSeconds} s + drain {shutdownTimeout.TotalSeconds} s");
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_RoleGrantsWhatKubernetesHostingNeedsToTheSilosAccount(string values)
    {
        Manifests render = await RenderAsync(values);
        YamlMappingNode role = render.Single("Role");
        YamlMappingNode binding = render.Single("RoleBinding");
        string account = render.Single("StatefulSet").Map("spec").Map("template").Map("spec").Text("serviceAccountName");

        YamlMappingNode rule = Assert.IsType<YamlMappingNode>(Assert.Single(role.Seq("rules").Children));
        Assert.Equal([""], rule.Seq("apiGroups").Texts());
        Assert.Equal(["pods"], rule.Seq("resources").Texts());
        Assert.Equal(["get", "list", "patch", "watch"], rule.Seq("verbs").Texts().Order(StringComparer.Ordinal));
        Assert.Equal(account, render.Single("ServiceAccount").Map("metadata").Text("name"));
        Assert.Equal(role.Map("metadata").Text("name"), binding.Map("roleRef").Text("name"));
        YamlMappingNode subject = Assert.IsType<YamlMappingNode>(Assert.Single(binding.Seq("subjects").Children));
        Assert.Equal(("ServiceAccount", account, "lc-test"), (subject.Text("kind"), subject.Text("name"), subject.Text("namespace")));
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_SecretsReachTheSiloOnlyBySecretKeyRefAndVolume(string values)
    {
        ChartCase expected = ChartCase.All[values];
        Manifests render = await RenderAsync(values);
        YamlMappingNode set = render.Single("StatefulSet");
        YamlMappingNode silo = Silo(set);

        YamlMappingNode token = silo.Env("LongCluster__Service__ApiToken").Map("valueFrom").Map("secretKeyRef");
        Assert.Equal(expected.TokenSecret, token.Text("name"));
        YamlMappingNode password = silo.Env("REDIS_PASSWORD").Map("valueFrom").Map("secretKeyRef");
        Assert.Equal(expected.BundledRedis ? "lc-longcluster-redis" : "membership-redis", password.Text("name"));
        // The connection string only refers to the password; Kubernetes substitutes it from the variable above.
        string redis = silo.Env("LongCluster__Redis").Text("value");
        Assert.Equal($"{expected.RedisEndpoint},password=$(REDIS_PASSWORD){(expected.BundledRedis ? "" : ",ssl=true")}", redis);

        YamlMappingNode tlsVolume = Assert.Single(set.Map("spec").Map("template").Map("spec").Seq("volumes").Children.Cast<YamlMappingNode>(), v => v.Text("name") == "tls");
        Assert.Equal("lc-longcluster-tls", tlsVolume.Map("secret").Text("secretName"));
        YamlMappingNode mount = Assert.Single(silo.Seq("volumeMounts").Children.Cast<YamlMappingNode>(), m => m.Text("name") == "tls");
        foreach ((string setting, string file) in new[] { ("CertificateFile", "tls.crt"), ("KeyFile", "tls.key"), ("AuthorityFile", "ca.crt") })
        {
            Assert.Equal($"{mount.Text("mountPath")}/{file}", silo.Env($"LongCluster__Tls__{setting}").Text("value"));
        }

        // Secrets the chart generated are referenced, and no secret value appears anywhere but in its Secret.
        var generated = render.OfKind("Secret").ToList();
        Assert.Equal(expected.TokenSecret == "lc-longcluster-api-token", generated.Any(s => s.Map("metadata").Text("name") == token.Text("name")));
        Assert.Contains(generated, s => s.Map("metadata").Text("name") == "lc-longcluster-tls" && s.Text("type") == "kubernetes.io/tls");
        Assert.Equal(expected.BundledRedis, generated.Any(s => s.Map("metadata").Text("name") == "lc-longcluster-redis"));
        string everythingElse = string.Join('\n', render.Objects.Where(o => o.Text("kind") != "Secret").Select(o => o.ToString()));
        foreach (YamlMappingNode secret in generated)
        {
            foreach (var (key, value) in secret.Map("data").Children)
            {
                string plain = Encoding.UTF8.GetString(Convert.FromBase64String(((YamlScalarNode)value).Value!));
                Assert.True(plain.Length >= 16, $"{secret.Map("metadata").Text("name")}/{key}: {plain.Length} characters");
                Assert.DoesNotContain(plain, everythingElse, StringComparison.Ordinal);
            }
        }

        Assert.All(silo.Seq("env").Children.Cast<YamlMappingNode>().Where(e => e.Has("value")),
            e => Assert.DoesNotMatch("(?i)token|password|secret|BEGIN", e.Text("name") + "=" + e.Text("value").Replace("password=$(REDIS_PASSWORD)", "", StringComparison.Ordinal)));
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_ResourcesAndGpuFollowTheBackend(string values)
    {
        ChartCase expected = ChartCase.All[values];
        YamlMappingNode silo = Silo((await RenderAsync(values)).Single("StatefulSet"));
        YamlMappingNode resources = silo.Map("resources");

        Assert.Equal("2", resources.Map("requests").Text("cpu"));
        Assert.Equal("8Gi", resources.Map("requests").Text("memory"));
        Assert.Equal("8Gi", resources.Map("limits").Text("memory"));
        Assert.Equal(expected.Gpu, resources.Map("limits").Has("nvidia.com/gpu"));
        Assert.Equal(expected.Gpu ? "ilgpu" : "cpu", silo.Env("LongCluster__Service__KernelBackend").Text("value"));
        if (expected.Gpu)
        {
            Assert.Equal("1", resources.Map("limits").Text("nvidia.com/gpu"));
        }
    }

    [Theory]
    [MemberData(nameof(ChartCase.Names), MemberType = typeof(ChartCase))]
    public async Task Template_Values_RedisBundledOnlyWhenAsked(string values)
    {
        ChartCase expected = ChartCase.All[values];
        Manifests render = await RenderAsync(values);

        Assert.Equal(expected.BundledRedis, render.OfKind("Deployment").Any());
        if (expected.BundledRedis)
        {
            YamlMappingNode redis = Assert.IsType<YamlMappingNode>(Assert.Single(render.Single("Deployment").Map("spec").Map("template").Map("spec").Seq("containers").Children));
            Assert.Equal("redis:7", redis.Text("image"));
            Assert.Equal("lc-longcluster-redis", redis.Env("REDIS_PASSWORD").Map("valueFrom").Map("secretKeyRef").Text("name"));
            Assert.Contains("$(REDIS_PASSWORD)", redis.Seq("args").Texts());
            Assert.Equal("6379", render.Single("Service", "-redis").Map("spec").Seq("ports").Children[0].Text("port"));
        }
    }

    [Fact]
    public async Task Template_Metrics_ScrapeAnnotationsNameTheHttpPortUnlessTurnedOff()
    {
        YamlMappingNode set = (await RenderAsync("default")).Single("StatefulSet");
        YamlMappingNode annotations = set.Map("spec").Map("template").Map("metadata").Map("annotations");
        Assert.Equal("true", annotations.Text("prometheus.io/scrape"));
        Assert.Equal(Silo(set).Env("LongCluster__HttpPort").Text("value"), annotations.Text("prometheus.io/port"));
        Assert.Equal("/metrics", annotations.Text("prometheus.io/path"));

        YamlMappingNode off = (await RenderAsync("default", "metrics.scrapeAnnotations=false", "podAnnotations.team=attention"))
            .Single("StatefulSet").Map("spec").Map("template").Map("metadata").Map("annotations");
        Assert.Equal("attention", off.Text("team"));
        Assert.False(off.Has("prometheus.io/scrape"));
        Assert.False((await RenderAsync("default", "metrics.scrapeAnnotations=false")).Single("StatefulSet").Map("spec").Map("template").Map("metadata").Has("annotations"));
    }

    internal static async Task<Manifests> RenderAsync(string values, params string[] sets)
    {
        ProcessResult render = await Helm.TemplateAsync(values, sets);
        Assert.True(render.ExitCode == 0, render.ToString());
        return Manifests.Parse(render.Stdout);
    }

    private static YamlMappingNode Silo(YamlMappingNode statefulSet) =>
        Assert.Single(statefulSet.Map("spec").Map("template").Map("spec").Seq("containers").Children.Cast<YamlMappingNode>(), c => c.Text("name") == "silo");
}
