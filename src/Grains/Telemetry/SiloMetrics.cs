using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using LongCluster.Contracts;
using LongCluster.Grains.Memory;

namespace LongCluster.Grains.Telemetry;

/// <summary>
/// One silo's side of <see cref="LongClusterTelemetry"/>: its name as the <c>silo</c> attribute, its resident bytes
/// (from <see cref="SiloResources"/>), its memory tier's resident and spilled bytes (from <see cref="MemoryTier"/>), and the state of every sequence whose coordinator lives here, which the
/// coordinators report as they move. Registered with the process-wide gauges while the silo runs.
/// </summary>
public sealed class SiloMetrics : IDisposable
{
    private readonly SiloResources _resources;
    private readonly MemoryTier _memory;
    private readonly ConcurrentDictionary<string, SequenceState> _sequences = new(StringComparer.Ordinal);

    public SiloMetrics(SiloResources resources, MemoryTier memory, ILocalSiloDetails silo)
    {
        ArgumentNullException.ThrowIfNull(silo);
        _resources = resources;
        _memory = memory;
        Silo = silo.SiloAddress.ToParsableString();
        SiloTag = new KeyValuePair<string, object?>("silo", Silo);
        LongClusterTelemetry.Register(this);
    }

    /// <summary>The silo's address, the value of every measurement's <c>silo</c> attribute.</summary>
    public string Silo { get; }

    internal KeyValuePair<string, object?> SiloTag { get; }

    internal long ResidentBytes => _resources.ResidentBytes;

    internal long MemoryResidentBytes => _memory.ResidentBytes;

    internal long MemorySpilledBytes => _memory.SpilledBytes;

    /// <summary>The kernel backend's kept copies (device memory) and the backend's name, its attribute.</summary>
    internal Measurement<long> DeviceBytes => new(_resources.Backend.KeptBytes, SiloTag, new KeyValuePair<string, object?>("backend", _resources.Backend.Name));

    /// <summary>Records where a sequence whose coordinator is on this silo stands; <see cref="SequenceState.Deleted"/> forgets it.</summary>
    internal void Track(string sequence, SequenceState state)
    {
        if (state == SequenceState.Deleted)
        {
            _sequences.TryRemove(sequence, out _);
        }
        else
        {
            _sequences[sequence] = state;
        }
    }

    /// <summary>A coordinator that leaves this silo (deactivated, or its silo stopping) no longer counts here.</summary>
    internal void Forget(string sequence) => _sequences.TryRemove(sequence, out _);

    internal IEnumerable<Measurement<int>> SequencesByState()
    {
        var counts = new int[Enum.GetValues<SequenceState>().Length];
        foreach (SequenceState state in _sequences.Values)
        {
            counts[(int)state]++;
        }

        // Every state but Deleted, zeros included, so a dashboard sees a state empty out rather than vanish.
        return Enum.GetValues<SequenceState>().Where(s => s != SequenceState.Deleted)
            .Select(s => new Measurement<int>(counts[(int)s], SiloTag, new KeyValuePair<string, object?>("state", s.ToString().ToLowerInvariant())));
    }

    public void Dispose() => LongClusterTelemetry.Unregister(this);
}
