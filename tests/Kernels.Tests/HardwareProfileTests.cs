using LongCluster.Kernels.Planning;

namespace LongCluster.Kernels.Tests;

public sealed class HardwareProfileTests
{
    private const string Valid = """
        {
          "name": "n", "kernelGflops": 10, "kernelSource": "k", "linkGbitPerSecond": 1, "linkSource": "l",
          "linkLatencyMicroseconds": 50, "latencySource": "t", "overlap": 0.5, "sharedHost": true
        }
        """;

    [Fact]
    public void Parse_ValidProfile_ReadsEveryField()
    {
        HardwareProfile profile = HardwareProfile.Parse(Valid, "test");
        Assert.Equal("n", profile.Name);
        Assert.Equal(10, profile.KernelGflops);
        Assert.Equal(0.5, profile.Overlap);
        Assert.True(profile.SharedHost);
        Assert.False(profile.LinkShared);
        Assert.Equal(0, profile.StepOverheadMicroseconds);
        // Shared host: 4 nodes get a quarter of 10 GFLOP/s each; the link is each node's own, 1 Gbit/s = 1.25e8 B/s.
        Assert.Equal(2.5e9, profile.NodeFlopsPerSecond(4));
        Assert.Equal(1.25e8, profile.NodeBytesPerSecond(4));
        Assert.Equal(profile, HardwareProfile.Parse(profile.ToJson(), "round trip"));
    }

    [Fact]
    public void Parse_TransportAndHostCores_ReadAndSplitOnASharedHost()
    {
        HardwareProfile profile = HardwareProfile.Parse(
            Valid.Replace("\"sharedHost\": true", "\"sharedHost\": true, \"hostCores\": 2, \"transportGbitPerSecond\": 8, \"transportSource\": \"x\"", StringComparison.Ordinal), "test");

        Assert.Equal(2, profile.HostCores);
        Assert.Equal(8, profile.TransportGbitPerSecond);
        Assert.Equal("x", profile.TransportSource);
        // 8 Gbit/s = 1e9 B/s for the host, a quarter each for 4 nodes; none stated: no transport cost.
        Assert.Equal(2.5e8, profile.NodeTransportBytesPerSecond(4));
        Assert.Equal(double.PositiveInfinity, HardwareProfile.Parse(Valid, "test").NodeTransportBytesPerSecond(4));
        Assert.Equal(profile, HardwareProfile.Parse(profile.ToJson(), "round trip"));
    }

    public static TheoryData<string, string, string> BadProfiles() => new()
    {
        { Valid.Replace("\"kernelGflops\": 10", "\"kernelGflops\": -1", StringComparison.Ordinal), "kernelGflops", "expected a number > 0, got -1" },
        { Valid.Replace("\"kernelGflops\": 10", "\"kernelGflops\": \"fast\"", StringComparison.Ordinal), "kernelGflops", "expected a number > 0, got the string \"fast\"" },
        { Valid.Replace("\"linkSource\": \"l\",", "", StringComparison.Ordinal), "linkSource", "required, expected a non-empty string" },
        { Valid.Replace("\"overlap\": 0.5", "\"overlap\": 2", StringComparison.Ordinal), "overlap", "expected a number >= 0 and <= 1, got 2" },
        { Valid.Replace("\"sharedHost\": true", "\"sharedHost\": 1", StringComparison.Ordinal), "sharedHost", "expected true or false, got 1" },
        { Valid.Replace("\"name\": \"n\"", "\"name\": \"n\", \"kernelTflops\": 1", StringComparison.Ordinal), "kernelTflops", "unknown field" },
        { Valid.Replace("\"sharedHost\": true", "\"sharedHost\": true, \"hostCores\": 1.5", StringComparison.Ordinal), "hostCores", "expected a whole number, got 1.5" },
        { Valid.Replace("\"sharedHost\": true", "\"sharedHost\": true, \"transportGbitPerSecond\": -2", StringComparison.Ordinal), "transportGbitPerSecond", "expected a number >= 0, got -2" },
        { "[1, 2]", "", "expected a JSON object, got Array" },
    };

    [Theory]
    [MemberData(nameof(BadProfiles))]
    public void Parse_BadField_NamesIt(string json, string field, string problem)
    {
        HardwareProfileException e = Assert.Throws<HardwareProfileException>(() => HardwareProfile.Parse(json, "bad.json"));
        Assert.Equal(field, e.Field);
        Assert.StartsWith(field.Length == 0 ? $"profile bad.json: {problem}" : $"profile bad.json: field '{field}': {problem}", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_BuiltInProfiles_AllValidWithSources()
    {
        Assert.Contains("h200-400g", HardwareProfile.BuiltInNames);
        Assert.Contains("this-machine", HardwareProfile.BuiltInNames);
        Assert.Contains(HardwareProfile.DefaultName, HardwareProfile.BuiltInNames);
        foreach (string name in HardwareProfile.BuiltInNames)
        {
            HardwareProfile profile = HardwareProfile.Load(name);
            Assert.Equal(name, profile.Name);
            Assert.NotEmpty(profile.KernelSource);
            Assert.NotEmpty(profile.LinkSource);
            Assert.NotEmpty(profile.LatencySource);
        }

        Assert.Equal(HardwareProfile.Load(HardwareProfile.DefaultName), HardwareProfile.Default);
    }

    [Fact]
    public void Load_UnknownName_ListsTheBuiltIns()
    {
        HardwareProfileException e = Assert.Throws<HardwareProfileException>(() => HardwareProfile.Load("no-such-profile"));
        Assert.Equal("", e.Field);
        Assert.Contains("not a built-in profile (built in: ", e.Message, StringComparison.Ordinal);
        Assert.Contains("h200-400g", e.Message, StringComparison.Ordinal);
    }
}
