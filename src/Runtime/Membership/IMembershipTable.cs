namespace LongCluster.Runtime.Membership;

/// <summary>
/// The membership table every silo reads and writes: in memory for a single process (development, tests) or in
/// Redis for a cluster. Writes other than <see cref="UpdateIAmAliveAsync"/> are conditional: they name the table
/// version they were computed from (and, for updates, the row's etag) and succeed only if nothing changed since;
/// a successful write bumps the version. A false return means "re-read and decide again", never an error.
/// </summary>
public interface IMembershipTable
{
    /// <summary>All rows and the table version, read atomically.</summary>
    Task<MembershipTableData> ReadAllAsync(CancellationToken cancellationToken);

    /// <summary>Adds a row if the table is still at <paramref name="expectedVersion"/> and the silo has no row yet.</summary>
    Task<bool> InsertRowAsync(MembershipEntry entry, long expectedVersion, CancellationToken cancellationToken);

    /// <summary>Replaces a row if the table is still at <paramref name="expectedVersion"/> and the row's etag is still <paramref name="etag"/>.</summary>
    Task<bool> UpdateRowAsync(MembershipEntry entry, string etag, long expectedVersion, CancellationToken cancellationToken);

    /// <summary>Records that the silo is alive at <paramref name="time"/>; unconditional, does not bump the version.</summary>
    Task UpdateIAmAliveAsync(SiloAddress silo, DateTimeOffset time, CancellationToken cancellationToken);

    /// <summary>Deletes rows of dead silos whose last sign of life is before <paramref name="before"/>; returns how many.</summary>
    Task<int> CleanupDefunctAsync(DateTimeOffset before, CancellationToken cancellationToken);
}
