namespace LongCluster.Grains;

/// <summary>The ids of live sequences (one activation, key <c>all</c>), kept alive for the life of the silo that holds it.</summary>
[KeepAlive]
internal sealed class SequenceDirectoryGrain : Grain, ISequenceDirectoryGrain
{
    private readonly SortedSet<string> _ids = new(StringComparer.Ordinal);

    public Task AddAsync(string id, CancellationToken cancellationToken)
    {
        _ids.Add(id);
        return Task.CompletedTask;
    }

    public Task RemoveAsync(string id, CancellationToken cancellationToken)
    {
        _ids.Remove(id);
        return Task.CompletedTask;
    }

    public Task<string[]> ListAsync(CancellationToken cancellationToken) => Task.FromResult(_ids.ToArray());
}
