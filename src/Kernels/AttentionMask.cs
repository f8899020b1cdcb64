using System.Globalization;
using System.Runtime.CompilerServices;

namespace LongCluster.Kernels;

/// <summary>The positional part of a mask.</summary>
public enum MaskKind
{
    /// <summary>Every key is visible.</summary>
    Full,

    /// <summary>Key position k is visible to query position q when k ≤ q.</summary>
    Causal,

    /// <summary>Sliding window of width w: q − w &lt; k ≤ q.</summary>
    Window,

    /// <summary>Prefix-LM with a bidirectional prefix of n tokens: k &lt; n or k ≤ q.</summary>
    Prefix,
}

/// <summary>How a tile of query rows and key columns relates to a mask.</summary>
internal enum TileVisibility
{
    Hidden,
    Partial,
    Visible,
}

/// <summary>
/// An attention mask over global token positions, so that a shard's slice computes exactly what the whole
/// sequence would. <see cref="Document"/> additionally restricts every query to keys of its own document id.
/// Text forms: <c>full</c>, <c>causal</c>, <c>window:W</c>, <c>prefix:N</c>, <c>document</c> (full inside a
/// document), <c>document-causal</c>, <c>document-window:W</c>, <c>document-prefix:N</c>. The retrieval rule
/// (<c>retrieval:…</c>) is no positional mask: <see cref="Parse"/> refuses it with the reason, and
/// <see cref="RetrievalRule"/> parses it.
/// </summary>
public readonly record struct AttentionMask
{
    private AttentionMask(MaskKind kind, long size, bool document)
    {
        Kind = kind;
        Size = size;
        Document = document;
    }

    public MaskKind Kind { get; }

    /// <summary>Window width for <see cref="MaskKind.Window"/>, prefix length for <see cref="MaskKind.Prefix"/>, else 0.</summary>
    public long Size { get; }

    /// <summary>Whether queries see only keys with the same document id.</summary>
    public bool Document { get; }

    public static AttentionMask Full => new(MaskKind.Full, 0, false);

    public static AttentionMask Causal => new(MaskKind.Causal, 0, false);

    public static AttentionMask Window(long width)
    {
        if (width < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(width), width, "window width must be >= 1");
        }

        return new AttentionMask(MaskKind.Window, width, false);
    }

    public static AttentionMask Prefix(long length)
    {
        if (length < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "prefix length must be >= 0");
        }

        return new AttentionMask(MaskKind.Prefix, length, false);
    }

    /// <summary>This mask, restricted to keys of the query's own document.</summary>
    public AttentionMask WithDocuments() => new(Kind, Size, true);

    /// <summary>Parses the text forms listed on the type; the error names the accepted forms.</summary>
    public static AttentionMask Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        string s = text.Trim().ToLowerInvariant();
        if (RetrievalRule.IsRetrieval(s))
        {
            // Well formed or not, the parameters are checked first so that their errors name the parameter.
            _ = RetrievalRule.Parse(text);
            throw new FormatException(
                $"mask '{text}' is the retrieval rule, which depends on Q and K rather than positions: it runs in longcluster attend "
                + "(on one node, or on a cluster with --endpoint or --local-cluster) and in the service's sequences (one shard, evicted blocks in memory grains), not here");
        }

        bool document = false;
        if (s == "document")
        {
            return Full.WithDocuments();
        }

        if (s.StartsWith("document-", StringComparison.Ordinal))
        {
            document = true;
            s = s["document-".Length..];
        }

        AttentionMask mask;
        if (s == "full")
        {
            mask = Full;
        }
        else if (s == "causal")
        {
            mask = Causal;
        }
        else if (s.StartsWith("window:", StringComparison.Ordinal) && TryParseSize(s["window:".Length..], 1, out long w))
        {
            mask = Window(w);
        }
        else if (s.StartsWith("prefix:", StringComparison.Ordinal) && TryParseSize(s["prefix:".Length..], 0, out long n))
        {
            mask = Prefix(n);
        }
        else
        {
            throw new FormatException(
                $"mask '{text}' is not one of full, causal, window:W (W >= 1), prefix:N (N >= 0), document, document-causal, document-window:W, document-prefix:N");
        }

        return document ? mask.WithDocuments() : mask;
    }

    public override string ToString()
    {
        string positional = Kind switch
        {
            MaskKind.Full => "full",
            MaskKind.Causal => "causal",
            MaskKind.Window => "window:" + Size.ToString(CultureInfo.InvariantCulture),
            _ => "prefix:" + Size.ToString(CultureInfo.InvariantCulture),
        };
        if (!Document)
        {
            return positional;
        }

        return Kind == MaskKind.Full ? "document" : "document-" + positional;
    }

    /// <summary>Whether key position <paramref name="k"/> is visible to query position <paramref name="q"/> (documents aside).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsVisible(long q, long k) => Kind switch
    {
        MaskKind.Full => true,
        MaskKind.Causal => k <= q,
        MaskKind.Window => k <= q && k > q - Size,
        _ => k < Size || k <= q,
    };

    /// <summary>The key positions visible to query position <paramref name="q"/> (documents aside): the closed interval [lo, hi].</summary>
    public (long Lo, long Hi) VisibleRange(long q) => Kind switch
    {
        MaskKind.Full => (long.MinValue, long.MaxValue),
        MaskKind.Causal => (long.MinValue, q),
        MaskKind.Window => (q - Size + 1, q),
        _ => (long.MinValue, Math.Max(q, Size - 1)),
    };

    /// <summary>Whether the key is visible, documents included.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsVisible(long q, long k, int queryDocument, int keyDocument) =>
        (!Document || queryDocument == keyDocument) && IsVisible(q, k);

    /// <summary>
    /// Classifies a tile from the ranges of its query and key positions (and document ids). Hidden means no pair in
    /// the tile can be visible, Visible that every pair is; anything else is Partial and needs per-element masking.
    /// </summary>
    internal TileVisibility Classify(in TileRange queries, in TileRange keys)
    {
        TileVisibility positional = Kind switch
        {
            MaskKind.Full => TileVisibility.Visible,
            MaskKind.Causal => keys.MaxPosition <= queries.MinPosition ? TileVisibility.Visible
                : keys.MinPosition > queries.MaxPosition ? TileVisibility.Hidden
                : TileVisibility.Partial,
            MaskKind.Window => keys.MinPosition > queries.MaxPosition || keys.MaxPosition <= queries.MinPosition - Size ? TileVisibility.Hidden
                : keys.MaxPosition <= queries.MinPosition && keys.MinPosition > queries.MaxPosition - Size ? TileVisibility.Visible
                : TileVisibility.Partial,
            _ => keys.MaxPosition < Size || keys.MaxPosition <= queries.MinPosition ? TileVisibility.Visible
                : keys.MinPosition >= Size && keys.MinPosition > queries.MaxPosition ? TileVisibility.Hidden
                : TileVisibility.Partial,
        };
        if (!Document || positional == TileVisibility.Hidden)
        {
            return positional;
        }

        if (keys.MinDocument > queries.MaxDocument || keys.MaxDocument < queries.MinDocument)
        {
            return TileVisibility.Hidden;
        }

        bool oneDocument = queries.MinDocument == queries.MaxDocument
            && keys.MinDocument == keys.MaxDocument
            && queries.MinDocument == keys.MinDocument;
        return oneDocument ? positional : TileVisibility.Partial;
    }

    /// <summary>
    /// Counts visible (query, key) pairs: the work a kernel must do. When the key positions ascend (and, for document
    /// masks, their document ids do not decrease, as in packed sequences) each query row is two binary searches, or,
    /// when the query positions ascend too (no documents), one walk of two cursors over the keys; otherwise every
    /// pair is tested.
    /// </summary>
    public long CountLivePairs(ReadOnlySpan<long> queryPositions, ReadOnlySpan<long> keyPositions, ReadOnlySpan<int> queryDocuments = default, ReadOnlySpan<int> keyDocuments = default)
    {
        if (Kind == MaskKind.Full && !Document)
        {
            return (long)queryPositions.Length * keyPositions.Length;
        }

        bool sorted = true;
        for (int j = 1; j < keyPositions.Length && sorted; j++)
        {
            sorted = keyPositions[j] > keyPositions[j - 1] && (!Document || keyDocuments[j] >= keyDocuments[j - 1]);
        }

        long count = 0;
        if (sorted && !Document && IsAscending(queryPositions))
        {
            // Both ascending: a query's visible range only moves right (VisibleRange is monotone in q), so two
            // cursors walk the keys once — O(n + m) rather than O(n log m) for a ring schedule's million cells.
            int first = 0;
            int end = 0;
            foreach (long q in queryPositions)
            {
                (long lo, long hi) = VisibleRange(q);
                while (first < keyPositions.Length && keyPositions[first] < lo)
                {
                    first++;
                }

                end = Math.Max(end, first);
                while (end < keyPositions.Length && keyPositions[end] <= hi)
                {
                    end++;
                }

                count += end - first;
            }

            return count;
        }

        if (sorted)
        {
            for (int i = 0; i < queryPositions.Length; i++)
            {
                (long lo, long hi) = VisibleRange(queryPositions[i]);
                int first = LowerBound(keyPositions, lo);
                int end = LowerBound(keyPositions, hi == long.MaxValue ? hi : hi + 1);
                if (Document)
                {
                    first = Math.Max(first, LowerBound(keyDocuments, queryDocuments[i]));
                    end = Math.Min(end, queryDocuments[i] == int.MaxValue ? keyDocuments.Length : LowerBound(keyDocuments, queryDocuments[i] + 1));
                }

                count += Math.Max(0, end - first);
            }

            return count;
        }

        for (int i = 0; i < queryPositions.Length; i++)
        {
            int qd = Document ? queryDocuments[i] : 0;
            for (int j = 0; j < keyPositions.Length; j++)
            {
                if (IsVisible(queryPositions[i], keyPositions[j], qd, Document ? keyDocuments[j] : 0))
                {
                    count++;
                }
            }
        }

        return count;
    }

    private static bool IsAscending(ReadOnlySpan<long> positions)
    {
        for (int i = 1; i < positions.Length; i++)
        {
            if (positions[i] <= positions[i - 1])
            {
                return false;
            }
        }

        return true;
    }

    private static int LowerBound<T>(ReadOnlySpan<T> sorted, T value)
        where T : IComparable<T>
    {
        int lo = 0;
        int hi = sorted.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (sorted[mid].CompareTo(value) < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    private static bool TryParseSize(string text, long minimum, out long value) =>
        long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value) && value >= minimum;
}

/// <summary>The position and document-id ranges of a tile's rows or columns.</summary>
internal readonly record struct TileRange(long MinPosition, long MaxPosition, int MinDocument, int MaxDocument)
{
    public static TileRange Of(ReadOnlySpan<long> positions, ReadOnlySpan<int> documents)
    {
        long minP = long.MaxValue, maxP = long.MinValue;
        foreach (long p in positions)
        {
            minP = Math.Min(minP, p);
            maxP = Math.Max(maxP, p);
        }

        int minD = int.MaxValue, maxD = int.MinValue;
        foreach (int d in documents)
        {
            minD = Math.Min(minD, d);
            maxD = Math.Max(maxD, d);
        }

        return new TileRange(minP, maxP, minD, maxD);
    }
}
