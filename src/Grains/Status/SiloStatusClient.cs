using Orleans.Runtime.Services;

namespace LongCluster.Grains.Status;

/// <summary>Reaches the <see cref="ISiloStatusService"/> of a given silo (one singleton per silo).</summary>
internal sealed class SiloStatusClient(IServiceProvider services) : GrainServiceClient<ISiloStatusService>(services)
{
    /// <summary>The status service on <paramref name="silo"/>; a call fails (SiloUnavailableException) if that silo is gone.</summary>
    public ISiloStatusService On(SiloAddress silo) => GetGrainService(silo);
}
