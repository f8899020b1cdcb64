using Orleans.Services;

namespace LongCluster.Grains.Status;

/// <summary>
/// One per silo (an Orleans grain service, started with the silo): what this silo holds and what its coordinators
/// ran lately. The status page asks every active silo's instance through <see cref="SiloStatusClient"/>.
/// </summary>
internal interface ISiloStatusService : IGrainService
{
    /// <summary>This silo's facts as of the call: resident bytes, the sequences it hosts shards of, its recent layer runs.</summary>
    Task<SiloReport> ReportAsync(CancellationToken cancellationToken);
}
