using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Tests;

/// <summary>The contract every membership table keeps; run against the in-memory table and a real Redis.</summary>
public abstract class MembershipTableContract
{
    private static readonly DateTimeOffset Start = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);

    protected abstract Task<IMembershipTable> CreateAsync();

    [Fact]
    public async Task InsertRow_EmptyTable_VersionOneAndRowReadBack()
    {
        IMembershipTable table = await CreateAsync();
        MembershipEntry entry = Entry(1);
        Assert.True(await table.InsertRowAsync(entry, 0, default));
        MembershipTableData data = await table.ReadAllAsync(default);
        Assert.Equal(1, data.Version);
        (MembershipEntry read, string etag) = Assert.Single(data.Rows);
        Assert.Equal(entry.Silo, read.Silo);
        Assert.Equal(SiloStatus.Joining, read.Status);
        Assert.Equal(entry.StartTime, read.StartTime);
        Assert.NotEmpty(etag);
    }

    [Fact]
    public async Task InsertRow_StaleVersionOrDuplicate_Refused()
    {
        IMembershipTable table = await CreateAsync();
        Assert.True(await table.InsertRowAsync(Entry(1), 0, default));
        Assert.False(await table.InsertRowAsync(Entry(2), 0, default));
        Assert.False(await table.InsertRowAsync(Entry(1), 1, default));
        Assert.True(await table.InsertRowAsync(Entry(2), 1, default));
        Assert.Equal(2, (await table.ReadAllAsync(default)).Version);
    }

    [Fact]
    public async Task UpdateRow_CurrentEtagAndVersion_AppliesOnceOnly()
    {
        IMembershipTable table = await CreateAsync();
        await table.InsertRowAsync(Entry(1), 0, default);
        MembershipTableData data = await table.ReadAllAsync(default);
        (MembershipEntry entry, string etag) = data.Rows[0];
        MembershipEntry active = entry.WithStatus(SiloStatus.Active);
        Assert.True(await table.UpdateRowAsync(active, etag, data.Version, default));
        Assert.False(await table.UpdateRowAsync(entry.WithStatus(SiloStatus.Dead), etag, data.Version + 1, default));
        Assert.False(await table.UpdateRowAsync(entry.WithStatus(SiloStatus.Dead), "nonsense", data.Version + 1, default));
        MembershipTableData after = await table.ReadAllAsync(default);
        Assert.Equal(SiloStatus.Active, after.Rows[0].Entry.Status);
        Assert.Equal(2, after.Version);
        Assert.NotEqual(etag, after.Rows[0].ETag);
    }

    [Fact]
    public async Task UpdateRow_ConcurrentWritersFromOneVersion_ExactlyOneWins()
    {
        IMembershipTable table = await CreateAsync();
        for (int i = 0; i < 5; i++)
        {
            await table.InsertRowAsync(Entry(i), i, default);
        }

        MembershipTableData data = await table.ReadAllAsync(default);
        bool[] results = await Task.WhenAll(data.Rows.Select(row =>
            table.UpdateRowAsync(row.Entry with { Suspicions = [new Suspicion(Entry(99).Silo, Start)] }, row.ETag, data.Version, default)));
        Assert.Equal(1, results.Count(r => r));
    }

    [Fact]
    public async Task UpdateIAmAlive_MovesTimeWithoutVersionBump()
    {
        IMembershipTable table = await CreateAsync();
        MembershipEntry entry = Entry(1);
        await table.InsertRowAsync(entry, 0, default);
        await table.UpdateIAmAliveAsync(entry.Silo, Start.AddMinutes(5), default);
        await table.UpdateIAmAliveAsync(Entry(7).Silo, Start.AddMinutes(5), default);
        MembershipTableData data = await table.ReadAllAsync(default);
        Assert.Equal(1, data.Version);
        Assert.Equal(Start.AddMinutes(5), Assert.Single(data.Rows).Entry.IAmAliveTime);
    }

    [Fact]
    public async Task CleanupDefunct_RemovesOnlyDeadRowsQuietSinceCutoff()
    {
        IMembershipTable table = await CreateAsync();
        long version = 0;
        foreach ((int id, SiloStatus status, int minutes) in new[] { (1, SiloStatus.Dead, 0), (2, SiloStatus.Dead, 30), (3, SiloStatus.Active, 0) })
        {
            await table.InsertRowAsync(Entry(id) with { Status = status, IAmAliveTime = Start.AddMinutes(minutes) }, version++, default);
        }

        Assert.Equal(1, await table.CleanupDefunctAsync(Start.AddMinutes(10), default));
        MembershipTableData data = await table.ReadAllAsync(default);
        Assert.Equal(["silo-2", "silo-3"], data.Rows.Select(r => r.Entry.Name).Order().ToArray());
    }

    protected static MembershipEntry Entry(int id) =>
        new(new SiloAddress("127.0.0.1", 11000 + id, 1000 + id), SiloStatus.Joining, $"silo-{id}", Start, Start, []);
}

public sealed class InMemoryMembershipTableTests : MembershipTableContract
{
    protected override Task<IMembershipTable> CreateAsync() => Task.FromResult<IMembershipTable>(new InMemoryMembershipTable());
}

public sealed class RedisMembershipTableTests : MembershipTableContract, IAsyncLifetime
{
    private RedisServerProcess? _server;
    private int _tables;

    public async Task InitializeAsync() => _server = await RedisServerProcess.StartAsync();

    public async Task DisposeAsync() => await _server!.DisposeAsync();

    /// <summary>Each test gets its own cluster id, so tests share the server but not a table.</summary>
    protected override Task<IMembershipTable> CreateAsync() => Task.FromResult<IMembershipTable>(new RedisMembershipTable(new RedisClusteringOptions
    {
        ClusterId = $"test-{Interlocked.Increment(ref _tables)}",
        Redis = new RedisOptions { Port = _server!.Port },
    }));

    [Fact]
    public async Task Tables_DifferentClusterIds_DoNotSeeEachOther()
    {
        IMembershipTable a = await CreateAsync();
        IMembershipTable b = await CreateAsync();
        await a.InsertRowAsync(Entry(1), 0, default);
        Assert.Empty((await b.ReadAllAsync(default)).Rows);
    }
}
