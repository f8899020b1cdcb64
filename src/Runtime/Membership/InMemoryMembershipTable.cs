namespace LongCluster.Runtime.Membership;

/// <summary>
/// The embedded default: the table in this process's memory, shared by every silo of an in-process cluster.
/// Same semantics as the Redis table; a lock makes each operation atomic.
/// </summary>
public sealed class InMemoryMembershipTable : IMembershipTable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<SiloAddress, (MembershipEntry Entry, long ETag)> _rows = [];
    private long _version;
    private long _nextETag;

    public Task<MembershipTableData> ReadAllAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var rows = _rows.Values.Select(r => (r.Entry, r.ETag.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToList();
            return Task.FromResult(new MembershipTableData(_version, rows));
        }
    }

    public Task<bool> InsertRowAsync(MembershipEntry entry, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        lock (_lock)
        {
            if (_version != expectedVersion || _rows.ContainsKey(entry.Silo))
            {
                return Task.FromResult(false);
            }

            _rows[entry.Silo] = (entry, ++_nextETag);
            _version++;
            return Task.FromResult(true);
        }
    }

    public Task<bool> UpdateRowAsync(MembershipEntry entry, string etag, long expectedVersion, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        lock (_lock)
        {
            if (_version != expectedVersion
                || !_rows.TryGetValue(entry.Silo, out (MembershipEntry Entry, long ETag) current)
                || current.ETag.ToString(System.Globalization.CultureInfo.InvariantCulture) != etag)
            {
                return Task.FromResult(false);
            }

            _rows[entry.Silo] = (entry, ++_nextETag);
            _version++;
            return Task.FromResult(true);
        }
    }

    public Task UpdateIAmAliveAsync(SiloAddress silo, DateTimeOffset time, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_rows.TryGetValue(silo, out (MembershipEntry Entry, long ETag) current))
            {
                _rows[silo] = (current.Entry with { IAmAliveTime = time }, current.ETag);
            }

            return Task.CompletedTask;
        }
    }

    public Task<int> CleanupDefunctAsync(DateTimeOffset before, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            SiloAddress[] defunct = _rows.Values
                .Where(r => r.Entry.Status == SiloStatus.Dead && r.Entry.IAmAliveTime < before)
                .Select(r => r.Entry.Silo)
                .ToArray();
            foreach (SiloAddress silo in defunct)
            {
                _rows.Remove(silo);
            }

            return Task.FromResult(defunct.Length);
        }
    }
}
