using LongCluster.Runtime.Membership;

namespace LongCluster.Runtime.Hosting;

/// <summary>
/// N silos in this process on the embedded default (in-memory membership, loopback ports picked by the OS): the
/// cluster tests and the single-machine commands run on. Start returns once every silo sees all N active.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    private readonly List<Silo> _silos;

    private LocalCluster(List<Silo> silos, InMemoryMembershipTable table)
    {
        _silos = silos;
        Table = table;
    }

    public IReadOnlyList<Silo> Silos => _silos;

    public InMemoryMembershipTable Table { get; }

    /// <summary>Grain references through the first silo (any silo routes to the owner).</summary>
    public IGrainFactory GrainFactory => _silos[0].GrainFactory;

    /// <param name="configure">Adjusts each silo's options (timing, limits); ports, host and cluster id are set here.</param>
    /// <param name="extensions">Services every silo hosts (the attention service).</param>
    public static async Task<LocalCluster> StartAsync(
        int silos, GrainTypeRegistry grainTypes, Action<SiloOptions>? configure = null, CancellationToken cancellationToken = default, IReadOnlyList<ISiloExtension>? extensions = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        ArgumentNullException.ThrowIfNull(grainTypes);
        var table = new InMemoryMembershipTable();
        var started = new List<Silo>();
        string secret = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        try
        {
            for (int i = 0; i < silos; i++)
            {
                var options = new SiloOptions { ClusterId = "local", Name = $"silo-{i}", Host = "127.0.0.1", SiloPort = 0, HttpPort = 0, Secret = secret };
                configure?.Invoke(options);
                started.Add(await Silo.StartAsync(options, table, grainTypes, cancellationToken: cancellationToken, extensions: extensions).ConfigureAwait(false));
            }

            foreach (Silo silo in started)
            {
                await silo.Membership.WaitForViewAsync(v => v.ActiveSilos.Length == silos, cancellationToken).ConfigureAwait(false);
            }

            return new LocalCluster(started, table);
        }
        catch
        {
            foreach (Silo silo in started)
            {
                await silo.DisposeAsync().ConfigureAwait(false);
            }

            throw;
        }
    }

    /// <summary>Stops silo <paramref name="index"/> without leaving (as a killed process would) and removes it from <see cref="Silos"/>.</summary>
    public async Task<SiloAddress> CrashAsync(int index)
    {
        Silo silo = _silos[index];
        _silos.RemoveAt(index);
        await silo.DisposeAsync().ConfigureAwait(false);
        return silo.Address;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (Silo silo in _silos)
        {
            await silo.StopAsync(CancellationToken.None).ConfigureAwait(false);
            await silo.DisposeAsync().ConfigureAwait(false);
        }
    }
}
