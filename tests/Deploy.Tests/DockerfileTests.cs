using System.Text.RegularExpressions;

namespace LongCluster.Deploy.Tests;

/// <summary>
/// The Dockerfile, read as instructions: its publish step is run here as written (only the output folder moved to a
/// temporary one), so the image builds from the same <c>dotnet publish</c> the tests run; the runtime stage is
/// non-root, runs the silo and checks <c>/healthz</c>; the chart's image is this one.
/// </summary>
public sealed partial class DockerfileTests : IDisposable
{
    private readonly string _output = Directory.CreateTempSubdirectory("lc-publish-").FullName;

    public void Dispose() => Directory.Delete(_output, recursive: true);

    [Fact]
    public async Task PublishStep_RunAsWritten_ProducesTheSiloTheEntrypointRuns()
    {
        string[] publish = Assert.Single(Instructions("RUN"), i => i.StartsWith("dotnet publish", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries);
        int output = Array.IndexOf(publish, "-o");
        Assert.True(output > 0, "the publish step names its output with -o");
        string copied = Assert.Single(Instructions("COPY"), c => c.StartsWith("--from=build", StringComparison.Ordinal));
        Assert.Equal($"--from=build {publish[output + 1]} .", copied);
        publish[output + 1] = _output;

        ProcessResult run = await ProcessRunner.RunAsync(publish[0], publish[1..], TimeSpan.FromMinutes(8),
            new Dictionary<string, string> { ["MSBUILDDISABLENODEREUSE"] = "1", ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1", ["DOTNET_NOLOGO"] = "1" });

        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(["dotnet", "publish", "src/Silo", "-c", "Release", "-o"], publish[..6]);
        Assert.True(File.Exists(Path.Combine(_output, "longcluster-silo.dll")), string.Join('\n', Directory.GetFiles(_output)));
        Assert.True(File.Exists(Path.Combine(_output, "longcluster-silo.runtimeconfig.json")));
        Assert.Equal("""["dotnet", "longcluster-silo.dll"]""", Assert.Single(Instructions("ENTRYPOINT")));
    }

    [Fact]
    public void RuntimeStage_AspNetImageNonRootWithHealthCheck()
    {
        string[] from = Instructions("FROM");
        Assert.Equal(["mcr.microsoft.com/dotnet/sdk:10.0 AS build", "mcr.microsoft.com/dotnet/aspnet:10.0"], from);
        Assert.Equal("$APP_UID", Assert.Single(Instructions("USER")));
        string health = Assert.Single(Instructions("HEALTHCHECK"));
        Assert.Contains("GET /healthz", health);
        Assert.Contains("${LongCluster__HttpPort:-8080}", health);
        Assert.Equal("8080 11111", Assert.Single(Instructions("EXPOSE")));
    }

    [Fact]
    public void DockerIgnore_KeepsBuildOutputsOutOfTheContext()
    {
        string[] ignored = File.ReadAllLines(Path.Combine(Repository.Root, ".dockerignore"));
        Assert.Contains("**/bin/", ignored);
        Assert.Contains("**/obj/", ignored);
        Assert.DoesNotContain(ignored, l => l.TrimEnd('/') is "src" or "Directory.Build.props" or "Directory.Packages.props" or ".editorconfig");
    }

    [Fact]
    public void ChartDefaultImage_IsTheSiloImage()
    {
        string values = File.ReadAllText(Path.Combine(Repository.Chart, "values.yaml"));
        Assert.Matches(@"(?m)^image:\n  repository: longcluster-silo$", values.Replace("\n\n", "\n", StringComparison.Ordinal));
    }

    /// <summary>The arguments of every <paramref name="instruction"/> in the Dockerfile, continuation lines joined.</summary>
    private static string[] Instructions(string instruction)
    {
        string text = Continuation().Replace(File.ReadAllText(Path.Combine(Repository.Root, "Dockerfile")), " ");
        return [.. text.Split('\n')
            .Where(l => l.StartsWith(instruction + " ", StringComparison.Ordinal))
            .Select(l => Spaces().Replace(l[(instruction.Length + 1)..].Trim(), " "))];
    }

    [GeneratedRegex(@"\\\n")]
    private static partial Regex Continuation();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
