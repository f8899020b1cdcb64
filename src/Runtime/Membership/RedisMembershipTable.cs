using System.Globalization;
using System.Text.Json;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Membership;

/// <summary>Options of <see cref="RedisMembershipTable"/>.</summary>
public sealed class RedisClusteringOptions
{
    /// <summary>Silos with the same cluster id share one table; others never see each other.</summary>
    public string ClusterId { get; set; } = "longcluster";

    public RedisOptions Redis { get; set; } = new();

    /// <summary>The Redis key of the table's hash.</summary>
    public string Key => $"longcluster:{ClusterId}:membership";

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ClusterId))
        {
            throw new ArgumentException("ClusterId is empty", nameof(ClusterId));
        }

        Redis.Validate();
    }
}

/// <summary>
/// The membership table in one Redis hash: field <c>version</c>, and per silo <c>row:S</c> (the entry as JSON),
/// <c>etag:S</c> (the table version that last wrote it) and <c>alive:S</c> (I-am-alive, Unix ms). Conditional
/// writes are Lua scripts, so check and write are one atomic step on the server.
/// </summary>
public sealed class RedisMembershipTable : IMembershipTable, IAsyncDisposable
{
    private const string InsertScript = """
        local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
        if v ~= tonumber(ARGV[1]) then return 0 end
        if redis.call('HEXISTS', KEYS[1], 'row:' .. ARGV[2]) == 1 then return 0 end
        v = v + 1
        redis.call('HSET', KEYS[1], 'version', v, 'row:' .. ARGV[2], ARGV[3], 'etag:' .. ARGV[2], v, 'alive:' .. ARGV[2], ARGV[4])
        return 1
        """;

    private const string UpdateScript = """
        local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
        if v ~= tonumber(ARGV[1]) then return 0 end
        if redis.call('HGET', KEYS[1], 'etag:' .. ARGV[2]) ~= ARGV[3] then return 0 end
        v = v + 1
        redis.call('HSET', KEYS[1], 'version', v, 'row:' .. ARGV[2], ARGV[4], 'etag:' .. ARGV[2], v)
        return 1
        """;

    private const string AliveScript = """
        if redis.call('HEXISTS', KEYS[1], 'row:' .. ARGV[1]) == 0 then return 0 end
        redis.call('HSET', KEYS[1], 'alive:' .. ARGV[1], ARGV[2])
        return 1
        """;

    private const string DeleteScript = """
        return redis.call('HDEL', KEYS[1], 'row:' .. ARGV[1], 'etag:' .. ARGV[1], 'alive:' .. ARGV[1])
        """;

    private readonly RedisClusteringOptions _options;
    private readonly RedisConnection _connection;

    public RedisMembershipTable(RedisClusteringOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _connection = new RedisConnection(options.Redis);
    }

    public async Task<MembershipTableData> ReadAllAsync(CancellationToken cancellationToken)
    {
        IReadOnlyList<RespValue> fields = (await _connection.ExecuteAsync(["HGETALL", _options.Key], cancellationToken).ConfigureAwait(false)).AsArray();
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i + 1 < fields.Count; i += 2)
        {
            values[fields[i].AsString()!] = fields[i + 1].AsString()!;
        }

        long version = values.TryGetValue("version", out string? v) ? long.Parse(v, CultureInfo.InvariantCulture) : 0;
        var rows = new List<(MembershipEntry, string)>();
        foreach ((string field, string json) in values)
        {
            if (!field.StartsWith("row:", StringComparison.Ordinal))
            {
                continue;
            }

            string silo = field["row:".Length..];
            MembershipEntry entry = JsonSerializer.Deserialize(json, MembershipJsonContext.Default.MembershipEntry)
                ?? throw new RedisException($"membership row {silo} is empty");
            if (values.TryGetValue("alive:" + silo, out string? alive))
            {
                DateTimeOffset aliveTime = DateTimeOffset.FromUnixTimeMilliseconds(long.Parse(alive, CultureInfo.InvariantCulture));
                entry = entry with { IAmAliveTime = aliveTime > entry.IAmAliveTime ? aliveTime : entry.IAmAliveTime };
            }

            rows.Add((entry, values.GetValueOrDefault("etag:" + silo, "")));
        }

        return new MembershipTableData(version, rows);
    }

    public async Task<bool> InsertRowAsync(MembershipEntry entry, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        RespValue reply = await EvalAsync(
            InsertScript,
            [expectedVersion.ToString(CultureInfo.InvariantCulture), entry.Silo.ToString(), Serialize(entry), UnixMs(entry.IAmAliveTime)],
            cancellationToken).ConfigureAwait(false);
        return reply.AsInteger() == 1;
    }

    public async Task<bool> UpdateRowAsync(MembershipEntry entry, string etag, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        RespValue reply = await EvalAsync(
            UpdateScript,
            [expectedVersion.ToString(CultureInfo.InvariantCulture), entry.Silo.ToString(), etag, Serialize(entry)],
            cancellationToken).ConfigureAwait(false);
        return reply.AsInteger() == 1;
    }

    public async Task UpdateIAmAliveAsync(SiloAddress silo, DateTimeOffset time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(silo);
        (await EvalAsync(AliveScript, [silo.ToString(), UnixMs(time)], cancellationToken).ConfigureAwait(false)).AsInteger();
    }

    public async Task<int> CleanupDefunctAsync(DateTimeOffset before, CancellationToken cancellationToken)
    {
        MembershipTableData data = await ReadAllAsync(cancellationToken).ConfigureAwait(false);
        int removed = 0;
        foreach ((MembershipEntry entry, _) in data.Rows)
        {
            if (entry.Status == SiloStatus.Dead && entry.IAmAliveTime < before)
            {
                await EvalAsync(DeleteScript, [entry.Silo.ToString()], cancellationToken).ConfigureAwait(false);
                removed++;
            }
        }

        return removed;
    }

    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    private Task<RespValue> EvalAsync(string script, string[] arguments, CancellationToken cancellationToken) =>
        _connection.ExecuteAsync(["EVAL", script, "1", _options.Key, .. arguments], cancellationToken);

    private static string Serialize(MembershipEntry entry) => JsonSerializer.Serialize(entry, MembershipJsonContext.Default.MembershipEntry);

    private static string UnixMs(DateTimeOffset time) => time.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
}
