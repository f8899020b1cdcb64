namespace LongCluster.Deploy.Tests;

/// <summary>Paths in this checkout, found from the test assembly's folder upwards (the folder holding LongCluster.sln).</summary>
internal static class Repository
{
    public static string Root { get; } = FindRoot();

    public static string Chart => Path.Combine(Root, "helm", "longcluster");

    public static string ValuesFile(string name) => Path.Combine(Root, "tests", "Deploy.Tests", "Values", name + ".yaml");

    private static string FindRoot()
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "LongCluster.sln")))
            {
                return d.FullName;
            }
        }

        throw new InvalidOperationException($"no LongCluster.sln above {AppContext.BaseDirectory}");
    }
}
