using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace LongCluster.Kernels.Planning;

/// <summary>
/// What <see cref="LayerCostModel"/> needs to know about the machines a layout runs on: how fast one node runs the
/// attention forward kernel, and the link between nodes. Loaded from a JSON file (<see cref="Load"/>) whose fields
/// are the camelCase names of the properties; every figure has a <c>…Source</c> field saying where it comes from.
/// </summary>
public sealed record HardwareProfile
{
    /// <summary>Names of the profiles built into this assembly (the files of <c>src/Kernels/Planning/Profiles/</c>), for <see cref="Load"/>.</summary>
    public static IReadOnlyList<string> BuiltInNames { get; } =
        [.. typeof(HardwareProfile).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(ResourcePrefix, StringComparison.Ordinal) && n.EndsWith(".json", StringComparison.Ordinal))
            .Select(n => n[ResourcePrefix.Length..^".json".Length])
            .Order(StringComparer.Ordinal)];

    /// <summary>
    /// The profile a silo uses for <c>layout: auto</c> when none is configured: <c>cpu-node</c>, one silo per machine
    /// of this project's reference class (a 2-core x86-64 VM with AVX-512), its blocks moved by Orleans' grain-call
    /// transport over a datacentre network.
    /// </summary>
    public static HardwareProfile Default => LazyDefault.Value;

    private static readonly Lazy<HardwareProfile> LazyDefault = new(() => Load(DefaultName));

    /// <summary>The name of <see cref="Default"/>.</summary>
    public const string DefaultName = "cpu-node";

    private const string ResourcePrefix = "LongCluster.Kernels.Planning.Profiles.";

    /// <summary>A short name for tables and plots.</summary>
    public required string Name { get; init; }

    /// <summary>What the profile describes, in a sentence.</summary>
    public string Description { get; init; } = "";

    /// <summary>
    /// Attention forward throughput of one node in GFLOP/s (10⁹ FLOP/s), counting 4·d FLOPs per live (query, key)
    /// pair and query head — what <c>longcluster bench kernel</c> reports. With <see cref="SharedHost"/>, the
    /// whole host's throughput, shared by its nodes.
    /// </summary>
    public required double KernelGflops { get; init; }

    /// <summary>Where <see cref="KernelGflops"/> comes from (a measurement, a publication and how it was scaled).</summary>
    public required string KernelSource { get; init; }

    /// <summary>Bandwidth of one node's link in Gbit/s (10⁹ bit/s), each direction; with <see cref="LinkShared"/>, the host's total.</summary>
    public required double LinkGbitPerSecond { get; init; }

    /// <summary>Where <see cref="LinkGbitPerSecond"/> comes from.</summary>
    public required string LinkSource { get; init; }

    /// <summary>
    /// How fast a node's own cores move a block through the service's transport (serialize, copy, deserialize), in
    /// Gbit/s; time those cores cannot compute, so it adds to a ring step whatever the link does. 0 (the default): the
    /// cores take no part (copy engines, RDMA), or the profile folds it into the link and <see cref="Overlap"/>. With
    /// <see cref="SharedHost"/>, the host's total, split among its nodes.
    /// </summary>
    public double TransportGbitPerSecond { get; init; }

    /// <summary>Where <see cref="TransportGbitPerSecond"/> comes from.</summary>
    public string TransportSource { get; init; } = "";

    /// <summary>One-way latency of a message between two nodes in µs, paid once per transfer.</summary>
    public required double LinkLatencyMicroseconds { get; init; }

    /// <summary>Where <see cref="LinkLatencyMicroseconds"/> comes from.</summary>
    public required string LatencySource { get; init; }

    /// <summary>Fixed cost of one ring step in µs besides compute and transfer (merging partials, scheduling).</summary>
    public double StepOverheadMicroseconds { get; init; }

    /// <summary>Fixed cost of one layer in µs (the coordinator's calls to the shards, the scatter and gather copies).</summary>
    public double LayerOverheadMicroseconds { get; init; }

    /// <summary>
    /// How much of a block's transfer hides behind the compute of the block before it, 0..1: a step takes
    /// max(c, t) + (1 − overlap) · min(c, t). 1 for hardware that moves bytes while it computes (a GPU's copy engines
    /// and RDMA NICs); lower where the same cores do both.
    /// </summary>
    public double Overlap { get; init; } = 1;

    /// <summary>Whether the nodes are processes on one host: P nodes share <see cref="KernelGflops"/> evenly (each gets 1/P).</summary>
    public bool SharedHost { get; init; }

    /// <summary>
    /// For a shared host, how many cores <see cref="KernelGflops"/> was measured on (0 where the profile does not say):
    /// one core's rate is their quotient, what <see cref="LayerCostModel"/> gives a node per core it is pinned to
    /// (<see cref="HostCores"/>).
    /// </summary>
    public int HostCores { get; init; }

    /// <summary>Whether the nodes share one link (loopback on one host): P nodes sending at once each get 1/P of its bandwidth.</summary>
    public bool LinkShared { get; init; }

    /// <summary>Where the profile's figures for the overheads and overlap come from.</summary>
    public string OverheadSource { get; init; } = "";

    /// <summary>FLOP/s of one node when <paramref name="nodes"/> run at once.</summary>
    public double NodeFlopsPerSecond(int nodes) => KernelGflops * 1e9 / (SharedHost ? nodes : 1);

    /// <summary>Bytes/s at which one node's cores move blocks through the transport when <paramref name="nodes"/> do at once; +∞ where the profile has no transport cost.</summary>
    public double NodeTransportBytesPerSecond(int nodes) =>
        TransportGbitPerSecond > 0 ? TransportGbitPerSecond * 1e9 / 8 / (SharedHost ? nodes : 1) : double.PositiveInfinity;

    /// <summary>Bytes/s of one node's link when <paramref name="nodes"/> send at once.</summary>
    public double NodeBytesPerSecond(int nodes) => LinkGbitPerSecond * 1e9 / 8 / (LinkShared ? nodes : 1);

    /// <summary>
    /// A profile from a JSON file, or a built-in one by name (<see cref="BuiltInNames"/>, with or without <c>.json</c>)
    /// when no such file exists. Errors (<see cref="HardwareProfileException"/>) name the source and the field.
    /// </summary>
    public static HardwareProfile Load(string pathOrName)
    {
        ArgumentNullException.ThrowIfNull(pathOrName);
        if (File.Exists(pathOrName))
        {
            return Parse(File.ReadAllText(pathOrName), pathOrName);
        }

        string name = pathOrName.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? pathOrName[..^".json".Length] : pathOrName;
        using Stream? stream = typeof(HardwareProfile).Assembly.GetManifestResourceStream(ResourcePrefix + name + ".json");
        if (stream is null)
        {
            throw new HardwareProfileException(
                pathOrName, "", $"no such file, and not a built-in profile (built in: {string.Join(", ", BuiltInNames)})");
        }

        using var reader = new StreamReader(stream, Encoding.UTF8);
        return Parse(reader.ReadToEnd(), "built-in " + name);
    }

    /// <summary>
    /// A profile from JSON text. Unknown fields, missing required ones, wrong types and values out of range are
    /// refused with the field named; <paramref name="source"/> names the text in the message.
    /// </summary>
    public static HardwareProfile Parse(string json, string source)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new HardwareProfileException(source, "", $"not valid JSON: {e.Message}");
        }

        using (document)
        {
            JsonElement root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new HardwareProfileException(source, "", $"expected a JSON object, got {root.ValueKind}");
            }

            var reader = new FieldReader(root, source);
            var profile = new HardwareProfile
            {
                Name = reader.Text("name", required: true),
                Description = reader.Text("description", required: false),
                KernelGflops = reader.Number("kernelGflops", required: true, 0, double.PositiveInfinity, minimumExclusive: true),
                KernelSource = reader.Text("kernelSource", required: true),
                LinkGbitPerSecond = reader.Number("linkGbitPerSecond", required: true, 0, double.PositiveInfinity, minimumExclusive: true),
                LinkSource = reader.Text("linkSource", required: true),
                LinkLatencyMicroseconds = reader.Number("linkLatencyMicroseconds", required: true, 0, double.PositiveInfinity),
                LatencySource = reader.Text("latencySource", required: true),
                TransportGbitPerSecond = reader.Number("transportGbitPerSecond", required: false, 0, double.PositiveInfinity),
                TransportSource = reader.Text("transportSource", required: false),
                StepOverheadMicroseconds = reader.Number("stepOverheadMicroseconds", required: false, 0, double.PositiveInfinity),
                LayerOverheadMicroseconds = reader.Number("layerOverheadMicroseconds", required: false, 0, double.PositiveInfinity),
                Overlap = reader.Number("overlap", required: false, 0, 1, defaultValue: 1),
                SharedHost = reader.Flag("sharedHost"),
                HostCores = reader.Count("hostCores"),
                LinkShared = reader.Flag("linkShared"),
                OverheadSource = reader.Text("overheadSource", required: false),
            };
            reader.RefuseUnknown();
            return profile;
        }
    }

    /// <summary>This profile as JSON, in the form <see cref="Parse"/> reads.</summary>
    public string ToJson() => JsonSerializer.Serialize(
        new Dictionary<string, object>
        {
            ["name"] = Name,
            ["description"] = Description,
            ["kernelGflops"] = KernelGflops,
            ["kernelSource"] = KernelSource,
            ["linkGbitPerSecond"] = LinkGbitPerSecond,
            ["linkSource"] = LinkSource,
            ["linkLatencyMicroseconds"] = LinkLatencyMicroseconds,
            ["latencySource"] = LatencySource,
            ["transportGbitPerSecond"] = TransportGbitPerSecond,
            ["transportSource"] = TransportSource,
            ["stepOverheadMicroseconds"] = StepOverheadMicroseconds,
            ["layerOverheadMicroseconds"] = LayerOverheadMicroseconds,
            ["overlap"] = Overlap,
            ["sharedHost"] = SharedHost,
            ["hostCores"] = HostCores,
            ["linkShared"] = LinkShared,
            ["overheadSource"] = OverheadSource,
        },
        new JsonSerializerOptions { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });

    /// <summary>Reads the fields of one profile object, remembering which it has seen so that unknown ones are refused.</summary>
    private sealed class FieldReader(JsonElement root, string source)
    {
        private static readonly string[] Known =
        [
            "name", "description", "kernelGflops", "kernelSource", "linkGbitPerSecond", "linkSource", "linkLatencyMicroseconds",
            "latencySource", "transportGbitPerSecond", "transportSource", "stepOverheadMicroseconds", "layerOverheadMicroseconds", "overlap", "sharedHost", "hostCores", "linkShared", "overheadSource",
        ];

        public string Text(string field, bool required)
        {
            if (!root.TryGetProperty(field, out JsonElement value))
            {
                return required ? throw Missing(field, "a non-empty string") : "";
            }

            if (value.ValueKind != JsonValueKind.String)
            {
                throw new HardwareProfileException(source, field, $"expected a string, got {Describe(value)}");
            }

            string text = value.GetString()!;
            if (required && string.IsNullOrWhiteSpace(text))
            {
                throw new HardwareProfileException(source, field, "expected a non-empty string");
            }

            return text;
        }

        public double Number(string field, bool required, double minimum, double maximum, bool minimumExclusive = false, double defaultValue = 0)
        {
            if (!root.TryGetProperty(field, out JsonElement value))
            {
                return required ? throw Missing(field, "a number") : defaultValue;
            }

            string range = (minimumExclusive ? "> " : ">= ") + minimum.ToString(CultureInfo.InvariantCulture)
                + (double.IsPositiveInfinity(maximum) ? "" : " and <= " + maximum.ToString(CultureInfo.InvariantCulture));
            if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number) || !double.IsFinite(number))
            {
                throw new HardwareProfileException(source, field, $"expected a number {range}, got {Describe(value)}");
            }

            if (number < minimum || (minimumExclusive && number == minimum) || number > maximum)
            {
                throw new HardwareProfileException(source, field, $"expected a number {range}, got {number.ToString(CultureInfo.InvariantCulture)}");
            }

            return number;
        }

        /// <summary>An optional whole number ≥ 0 (0 when absent).</summary>
        public int Count(string field)
        {
            double number = Number(field, required: false, 0, 1 << 20);
            if (number != Math.Floor(number))
            {
                throw new HardwareProfileException(source, field, $"expected a whole number, got {number.ToString(CultureInfo.InvariantCulture)}");
            }

            return (int)number;
        }

        public bool Flag(string field)
        {
            if (!root.TryGetProperty(field, out JsonElement value))
            {
                return false;
            }

            return value.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new HardwareProfileException(source, field, $"expected true or false, got {Describe(value)}"),
            };
        }

        public void RefuseUnknown()
        {
            foreach (JsonProperty property in root.EnumerateObject())
            {
                if (!Known.Contains(property.Name, StringComparer.Ordinal))
                {
                    throw new HardwareProfileException(source, property.Name, $"unknown field (known: {string.Join(", ", Known)})");
                }
            }
        }

        private HardwareProfileException Missing(string field, string expected) =>
            new(source, field, $"required, expected {expected}");

        private static string Describe(JsonElement value) => value.ValueKind switch
        {
            JsonValueKind.String => $"the string \"{value.GetString()}\"",
            JsonValueKind.Number => value.GetRawText(),
            _ => value.ValueKind.ToString().ToLowerInvariant(),
        };
    }
}
