using System.Globalization;

namespace LongCluster.Kernels.ContextParallel;

/// <summary>How tokens and heads are spread over the shards.</summary>
public enum LayoutKind
{
    /// <summary>Plain ring: shard i owns one contiguous block of tokens.</summary>
    Contiguous,

    /// <summary>Token t goes to shard (t / s) mod P, for stripe width s.</summary>
    Striped,

    /// <summary>The tokens are cut into 2P chunks; shard i owns chunks i and 2P−1−i (balanced under causal masks).</summary>
    Zigzag,

    /// <summary>DeepSpeed-Ulysses: all-to-all from sequence-sharded to head-sharded, local attention, and back.</summary>
    Ulysses,

    /// <summary>Ulysses of degree U inside groups, a zigzag ring of degree P/U across them.</summary>
    Hybrid,
}

/// <summary>
/// A context-parallel layout. Text forms: <c>contiguous</c>, <c>striped</c>, <c>striped:S</c>, <c>zigzag</c>,
/// <c>ulysses</c>, <c>hybrid:U</c>.
/// </summary>
public sealed record ContextLayout
{
    private ContextLayout(LayoutKind kind, int stripeWidth, int ulyssesDegree)
    {
        Kind = kind;
        StripeWidth = stripeWidth;
        HybridUlyssesDegree = ulyssesDegree;
    }

    public LayoutKind Kind { get; }

    /// <summary>Tokens per stripe for <see cref="LayoutKind.Striped"/>; 1 otherwise.</summary>
    public int StripeWidth { get; }

    /// <summary>The Ulysses degree U of <see cref="LayoutKind.Hybrid"/>; 0 otherwise.</summary>
    public int HybridUlyssesDegree { get; }

    public static ContextLayout Contiguous { get; } = new(LayoutKind.Contiguous, 1, 0);

    public static ContextLayout Zigzag { get; } = new(LayoutKind.Zigzag, 1, 0);

    public static ContextLayout Ulysses { get; } = new(LayoutKind.Ulysses, 1, 0);

    public static ContextLayout Striped(int stripeWidth = 1) => stripeWidth >= 1
        ? new(LayoutKind.Striped, stripeWidth, 0)
        : throw new ArgumentOutOfRangeException(nameof(stripeWidth), stripeWidth, "stripe width must be >= 1");

    public static ContextLayout Hybrid(int ulyssesDegree) => ulyssesDegree >= 1
        ? new(LayoutKind.Hybrid, 1, ulyssesDegree)
        : throw new ArgumentOutOfRangeException(nameof(ulyssesDegree), ulyssesDegree, "Ulysses degree must be >= 1");

    public static ContextLayout Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text.Trim().ToLowerInvariant();
        int colon = s.IndexOf(':', StringComparison.Ordinal);
        string name = colon < 0 ? s : s[..colon];
        string? argument = colon < 0 ? null : s[(colon + 1)..];
        int value = 0;
        bool hasValue = argument is not null && int.TryParse(argument, NumberStyles.None, CultureInfo.InvariantCulture, out value) && value >= 1;
        return (name, argument, hasValue) switch
        {
            ("contiguous", null, _) => Contiguous,
            ("zigzag", null, _) => Zigzag,
            ("ulysses", null, _) => Ulysses,
            ("striped", null, _) => Striped(),
            ("striped", _, true) => Striped(value),
            ("hybrid", _, true) => Hybrid(value),
            _ => throw new FormatException($"layout '{text}' is not one of contiguous, striped, striped:S, zigzag, ulysses, hybrid:U (S, U >= 1)"),
        };
    }

    public override string ToString() => Kind switch
    {
        LayoutKind.Contiguous => "contiguous",
        LayoutKind.Striped => StripeWidth == 1 ? "striped" : "striped:" + StripeWidth.ToString(CultureInfo.InvariantCulture),
        LayoutKind.Zigzag => "zigzag",
        LayoutKind.Ulysses => "ulysses",
        _ => "hybrid:" + HybridUlyssesDegree.ToString(CultureInfo.InvariantCulture),
    };
}
