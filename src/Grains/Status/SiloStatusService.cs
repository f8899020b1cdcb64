using LongCluster.Grains.Memory;
using Microsoft.Extensions.Logging;

namespace LongCluster.Grains.Status;

/// <summary>
/// The per-silo answer to the status page, as an Orleans <see cref="GrainService"/>: Orleans starts one on every
/// silo and routes a call for a given silo address to that silo's instance, which is what a cluster-wide view of
/// per-silo memory needs (a grain could land anywhere; the Orleans Dashboard gathers its per-silo counters the same
/// way). It only reads this silo's singletons, so it never blocks on grains.
/// </summary>
internal sealed class SiloStatusService(
    GrainId grainId, Silo silo, ILoggerFactory loggerFactory, SiloResources resources, MemoryTier memory, RecentLayers recent, SiloApiEndpoint api, ILocalSiloDetails local)
    : GrainService(grainId, silo, loggerFactory), ISiloStatusService
{
    public Task<SiloReport> ReportAsync(CancellationToken cancellationToken) => Task.FromResult(new SiloReport(
        local.SiloAddress.ToParsableString(),
        api.Url,
        resources.ResidentBytes,
        resources.Options.MaxResidentBytes,
        memory.ResidentBytes,
        memory.SpilledBytes,
        resources.SequenceIds,
        recent.Snapshot));
}
