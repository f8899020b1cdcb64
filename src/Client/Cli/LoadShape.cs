using System.Globalization;
using LongCluster.Contracts;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Cli;

/// <summary>
/// One sequence of <c>bench load</c>: its spec, how its prompt is cut into chunks, how many tokens are decoded after,
/// and the document id of every token (prompt and decoded) when the mask has documents. Picked at random, within
/// what the service accepts: chunk boundaries follow the mask (one chunk under <c>full</c>, the whole prefix in the
/// first chunk under <c>prefix:N</c>, a new document at every chunk under document masks), no decode under
/// <c>full</c>, and a layout whose heads and shards fit (<see cref="LayoutPlan"/> decides).
/// </summary>
internal sealed record LoadShape(SequenceSpec Spec, int[] Chunks, int DecodeSteps, int[]? Documents)
{
    /// <summary>Prompt lengths: long enough for every layout to give each shard rows, short enough that a client checks its answers in well under a second.</summary>
    public const int MinTokens = 64;

    public const int MaxTokens = 768;

    private static readonly int[] HeadDims = [16, 32, 64, 128];
    private static readonly string[] DTypes = ["f32", "bf16", "f16"];
    private static readonly string[] Masks = ["causal", "window", "prefix", "full", "document", "document-causal", "document-window", "document-prefix"];
    private static readonly string[] Layouts = ["contiguous", "striped", "striped:4", "zigzag", "ulysses", "hybrid:2"];

    public int PromptTokens => Chunks.Sum();

    public int TotalTokens => PromptTokens + DecodeSteps;

    public static LoadShape Pick(Random random, int silos)
    {
        ArgumentNullException.ThrowIfNull(random);
        int tokens = random.Next(MinTokens, MaxTokens + 1);
        int kvHeads = 1 << random.Next(3);
        int queryHeads = kvHeads << random.Next(3);
        int headDim = HeadDims[random.Next(HeadDims.Length)];
        string mask = Masks[random.Next(Masks.Length)];
        int[] chunks = mask == "full" ? [tokens] : Split(random, tokens, random.Next(1, 4));
        string maskText = mask switch
        {
            "window" or "document-window" => $"{mask}:{random.Next(1, 300).ToString(CultureInfo.InvariantCulture)}",
            "prefix" or "document-prefix" => $"{mask}:{random.Next(0, chunks[0] + 1).ToString(CultureInfo.InvariantCulture)}",
            _ => mask,
        };
        int decode = mask == "full" ? 0 : random.Next(0, 5);
        int shards = random.Next(1, silos + 1);
        string layout = Layouts[random.Next(Layouts.Length)];
        if (!Fits(layout, shards, chunks, queryHeads, kvHeads))
        {
            layout = "zigzag";
        }

        var spec = new SequenceSpec
        {
            Layers = random.Next(1, 3),
            QueryHeads = queryHeads,
            KeyValueHeads = kvHeads,
            HeadDim = headDim,
            DType = DTypes[random.Next(DTypes.Length)],
            Layout = layout,
            Mask = maskText,
            Shards = shards,
        };
        int[]? documents = mask.StartsWith("document", StringComparison.Ordinal) ? DocumentsOf(random, chunks, decode, newDocumentPerDecode: mask == "document") : null;
        return new LoadShape(spec, chunks, decode, documents);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{PromptTokens} tokens in chunks [{string.Join(", ", Chunks)}] + {DecodeSteps} decoded, {Spec.Layers} layers, {Spec.QueryHeads}:{Spec.KeyValueHeads} heads, d = {Spec.HeadDim}, {Spec.DType}, {Spec.Mask}, {Spec.Layout} on {Spec.Shards} shards");

    /// <summary><paramref name="count"/> chunks of at least one token each, summing to <paramref name="tokens"/>.</summary>
    private static int[] Split(Random random, int tokens, int count)
    {
        int[] cuts = [.. Enumerable.Range(1, tokens - 1).OrderBy(_ => random.Next()).Take(count - 1).Order()];
        int[] bounds = [0, .. cuts, tokens];
        return [.. bounds.Zip(bounds.Skip(1), (a, b) => b - a)];
    }

    private static bool Fits(string layout, int shards, int[] chunks, int queryHeads, int kvHeads)
    {
        try
        {
            ContextLayout parsed = ContextLayout.Parse(layout);
            foreach (int tokens in chunks.Append(0))
            {
                _ = new LayoutPlan(parsed, shards, tokens, queryHeads, kvHeads);
            }

            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>
    /// Non-decreasing ids: a new document at every chunk (so no earlier query can see a later chunk's keys, whatever
    /// the positional mask) and at a few random places inside chunks; decoded tokens continue the last document, or
    /// each start one under <c>document</c>, whose documents are bidirectional.
    /// </summary>
    private static int[] DocumentsOf(Random random, int[] chunks, int decode, bool newDocumentPerDecode)
    {
        var documents = new List<int>();
        int document = -1;
        foreach (int count in chunks)
        {
            document++;
            var splits = new HashSet<int>(Enumerable.Range(0, random.Next(0, 3)).Select(_ => random.Next(1, Math.Max(2, count))));
            for (int i = 0; i < count; i++)
            {
                document += splits.Contains(i) ? 1 : 0;
                documents.Add(document);
            }
        }

        for (int t = 0; t < decode; t++)
        {
            document += newDocumentPerDecode ? 1 : 0;
            documents.Add(document);
        }

        return [.. documents];
    }
}
