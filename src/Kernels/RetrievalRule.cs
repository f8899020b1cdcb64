using System.Globalization;

namespace LongCluster.Kernels;

/// <summary>
/// The parameters of the memory tier's retrieval rule (DESIGN.md, "Memory tier: the retrieval rule"): whole blocks of
/// <see cref="Block"/> positions after the first <see cref="Init"/>, each represented per KV head by the sum of its
/// <see cref="Representatives"/> best keys; every chunk of <see cref="Chunk"/> rows of a request attends to init, the
/// <see cref="TopK"/> most relevant evicted blocks of its KV head and the last <see cref="Local"/> positions.
/// Text form: <c>retrieval</c> or <c>retrieval:block=128,repr=4,topk=16,init=128,local=4096,chunk=512</c> (any
/// subset, the rest default). Unlike <see cref="AttentionMask"/> it is not positional: which keys a row sees depends
/// on Q and K, so the positional kernels (forward, decode, the ring) cannot apply it; <see cref="RetrievalAttention"/> does.
/// </summary>
public readonly record struct RetrievalRule
{
    public const int DefaultBlock = 128;
    public const int DefaultRepresentatives = 4;
    public const int DefaultTopK = 16;
    public const int DefaultInit = 128;
    public const int DefaultLocal = 4096;
    public const int DefaultChunk = 512;

    /// <summary>The word that starts the text form.</summary>
    public const string Name = "retrieval";

    private static readonly string[] s_keys = ["block", "repr", "topk", "init", "local", "chunk"];

    public RetrievalRule()
    {
    }

    /// <summary>Positions per block, B.</summary>
    public int Block { get; init; } = DefaultBlock;

    /// <summary>Representative keys per block and KV head, r (1..B).</summary>
    public int Representatives { get; init; } = DefaultRepresentatives;

    /// <summary>Evicted blocks a chunk selects per KV head, k.</summary>
    public int TopK { get; init; } = DefaultTopK;

    /// <summary>Leading positions every row sees, n_init.</summary>
    public int Init { get; init; } = DefaultInit;

    /// <summary>The local window, n_local: positions this close before a chunk's first row are never evicted.</summary>
    public int Local { get; init; } = DefaultLocal;

    /// <summary>Rows per chunk of a request, C.</summary>
    public int Chunk { get; init; } = DefaultChunk;

    /// <summary>Whether <paramref name="text"/> is a retrieval mask (well formed or not): <c>retrieval</c> or <c>retrieval:…</c>.</summary>
    public static bool IsRetrieval(string? text)
    {
        string s = text?.Trim() ?? "";
        return s.Equals(Name, StringComparison.OrdinalIgnoreCase)
            || s.StartsWith(Name + ":", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>Parses the text form; a <see cref="FormatException"/> names the parameter at fault, what was given and what is accepted.</summary>
    public static RetrievalRule Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text.Trim().ToLowerInvariant();
        if (!IsRetrieval(s))
        {
            throw new FormatException($"mask '{text}' is not a retrieval mask (retrieval or retrieval:key=value,...)");
        }

        var rule = new RetrievalRule();
        if (s == Name)
        {
            return rule;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string item in s[(Name.Length + 1)..].Split(','))
        {
            int equals = item.IndexOf('=', StringComparison.Ordinal);
            string key = (equals < 0 ? item : item[..equals]).Trim();
            if (equals < 0 || key.Length == 0)
            {
                throw new FormatException($"mask '{text}': '{item}' is not key=value (keys: {string.Join(", ", s_keys)})");
            }

            if (Array.IndexOf(s_keys, key) < 0)
            {
                throw new FormatException($"mask '{text}': unknown parameter '{key}' (keys: {string.Join(", ", s_keys)})");
            }

            if (!seen.Add(key))
            {
                throw new FormatException($"mask '{text}': {key} is given twice");
            }

            string valueText = item[(equals + 1)..].Trim();
            if (!int.TryParse(valueText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value))
            {
                throw new FormatException($"mask '{text}': {key} must be an integer, got '{valueText}'");
            }

            rule = key switch
            {
                "block" => rule with { Block = value },
                "repr" => rule with { Representatives = value },
                "topk" => rule with { TopK = value },
                "init" => rule with { Init = value },
                "local" => rule with { Local = value },
                _ => rule with { Chunk = value },
            };
        }

        (_, string? problem) = rule.Check();
        return problem is null ? rule : throw new FormatException($"mask '{text}': {problem}");
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first parameter out of range (its text key as the parameter name).</summary>
    public void Validate()
    {
        (string? field, string? problem) = Check();
        if (problem is not null)
        {
            throw new ArgumentException($"retrieval mask: {problem}", field);
        }
    }

    private (string? Field, string? Problem) Check()
    {
        if (Block < 1)
        {
            return ("block", $"block must be >= 1, got {Block}");
        }

        if (Representatives < 1 || Representatives > Block)
        {
            return ("repr", $"repr must be in 1..block ({Block}), got {Representatives}");
        }

        if (TopK < 1)
        {
            return ("topk", $"topk must be >= 1, got {TopK}");
        }

        if (Init < 0)
        {
            return ("init", $"init must be >= 0, got {Init}");
        }

        if (Local < 0)
        {
            return ("local", $"local must be >= 0, got {Local}");
        }

        return Chunk < 1 ? ("chunk", $"chunk must be >= 1, got {Chunk}") : (null, null);
    }

    /// <summary>Whole blocks among the first <paramref name="tokens"/> positions.</summary>
    public int BlockCount(long tokens) => (int)Math.Max(0, (tokens - Init) / Block);

    /// <summary>First position of block <paramref name="block"/>.</summary>
    public long BlockStart(int block) => Init + ((long)block * Block);

    /// <summary>
    /// J: the blocks evicted for a chunk whose first row is at <paramref name="chunkStart"/> (blocks 0..J−1), of the
    /// <paramref name="blocks"/> that exist: <c>min(blocks, floor(max(0, t0 − n_local + 1 − n_init) / B))</c>.
    /// </summary>
    public int EvictedBlocks(long chunkStart, int blocks) =>
        (int)Math.Min(blocks, Math.Max(0, chunkStart - Local + 1 - Init) / Block);

    /// <summary>The canonical text form, every parameter written.</summary>
    public override string ToString() => string.Create(
        CultureInfo.InvariantCulture, $"{Name}:block={Block},repr={Representatives},topk={TopK},init={Init},local={Local},chunk={Chunk}");
}
