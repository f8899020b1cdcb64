using System.Globalization;
using System.Text.Json.Serialization;

namespace LongCluster.Runtime.Membership;

/// <summary>A silo incarnation: endpoint plus a generation that changes on every start, so a restarted silo is a new member.</summary>
public sealed record SiloAddress(string Host, int Port, long Generation)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Host}:{Port}@{Generation}");

    public static SiloAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int at = text.LastIndexOf('@');
        int colon = at < 0 ? -1 : text.LastIndexOf(':', at);
        if (colon <= 0
            || !int.TryParse(text.AsSpan(colon + 1, at - colon - 1), NumberStyles.None, CultureInfo.InvariantCulture, out int port)
            || !long.TryParse(text.AsSpan(at + 1), NumberStyles.None, CultureInfo.InvariantCulture, out long generation))
        {
            throw new FormatException($"'{text}' is not a silo address (host:port@generation)");
        }

        return new SiloAddress(text[..colon], port, generation);
    }
}

/// <summary>Life cycle of a silo in the membership table.</summary>
public enum SiloStatus
{
    Joining,
    Active,
    ShuttingDown,
    Dead,
}

/// <summary>One silo's vote that another silo is unresponsive.</summary>
public sealed record Suspicion(SiloAddress Suspecter, DateTimeOffset Time);

/// <summary>
/// A row of the membership table. <see cref="IAmAliveTime"/> is refreshed on its own (no version bump, no
/// conflicts); everything else changes through a versioned, conditional update.
/// </summary>
public sealed record MembershipEntry(
    SiloAddress Silo,
    SiloStatus Status,
    string Name,
    DateTimeOffset StartTime,
    DateTimeOffset IAmAliveTime,
    IReadOnlyList<Suspicion> Suspicions)
{
    public MembershipEntry WithStatus(SiloStatus status) => this with { Status = status };
}

/// <summary>A consistent read of the whole table: every row with its etag, and the table version they belong to.</summary>
public sealed record MembershipTableData(long Version, IReadOnlyList<(MembershipEntry Entry, string ETag)> Rows)
{
    public (MembershipEntry Entry, string ETag)? Find(SiloAddress silo) =>
        Rows.Where(r => r.Entry.Silo == silo).Select(r => ((MembershipEntry, string)?)r).FirstOrDefault();
}

[JsonSourceGenerationOptions(Converters = [typeof(JsonStringEnumConverter<SiloStatus>)])]
[JsonSerializable(typeof(MembershipEntry))]
internal sealed partial class MembershipJsonContext : JsonSerializerContext;
