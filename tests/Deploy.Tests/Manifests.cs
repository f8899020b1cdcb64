using YamlDotNet.RepresentationModel;

namespace LongCluster.Deploy.Tests;

/// <summary>The Kubernetes objects of one render (multi-document YAML), looked up by kind and name.</summary>
internal sealed class Manifests
{
    private Manifests(IReadOnlyList<YamlMappingNode> objects) => Objects = objects;

    public IReadOnlyList<YamlMappingNode> Objects { get; }

    public static Manifests Parse(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        return new Manifests([.. stream.Documents.Select(d => d.RootNode).OfType<YamlMappingNode>()]);
    }

    public IEnumerable<YamlMappingNode> OfKind(string kind) => Objects.Where(o => o.Text("kind") == kind);

    public YamlMappingNode Single(string kind) => Assert.Single(OfKind(kind));

    public YamlMappingNode Single(string kind, string nameEndsWith) =>
        Assert.Single(OfKind(kind), o => o.Map("metadata").Text("name").EndsWith(nameEndsWith, StringComparison.Ordinal));
}

/// <summary>Walking parsed YAML with failures that name the missing key.</summary>
internal static class YamlNodes
{
    public static YamlMappingNode Map(this YamlNode node, string key) => (YamlMappingNode)node.Get(key);

    public static YamlSequenceNode Seq(this YamlNode node, string key) => (YamlSequenceNode)node.Get(key);

    public static string Text(this YamlNode node, string key) => ((YamlScalarNode)node.Get(key)).Value ?? "";

    public static bool Has(this YamlNode node, string key) => ((YamlMappingNode)node).Children.ContainsKey(new YamlScalarNode(key));

    public static YamlNode Get(this YamlNode node, string key) =>
        ((YamlMappingNode)node).Children.TryGetValue(new YamlScalarNode(key), out YamlNode? value)
            ? value
            : throw new KeyNotFoundException($"no '{key}' in {node.Start}: {node}");

    public static IEnumerable<string> Texts(this YamlSequenceNode sequence) => sequence.Children.Select(c => ((YamlScalarNode)c).Value ?? "");

    /// <summary>The silo container's env entry <paramref name="name"/>.</summary>
    public static YamlMappingNode Env(this YamlNode container, string name) =>
        Assert.Single(container.Seq("env").Children.Cast<YamlMappingNode>(), e => e.Text("name") == name);
}
