using LongCluster.Contracts;
using LongCluster.Grains;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service;

/// <summary>One silo of a <see cref="LocalAttentionCluster"/>: its host, its Orleans address and its client endpoint.</summary>
public sealed class LocalSilo(int index, WebApplication app) : IAsyncDisposable
{
    private int _disposed;

    /// <summary>Its position when the cluster started (silo 0 is the primary).</summary>
    public int Index { get; } = index;

    public WebApplication App { get; } = app;

    /// <summary>The silo's own service container.</summary>
    public IServiceProvider Services => App.Services;

    /// <summary>Orleans silo address, as <see cref="ShardInfo.Silo"/> reports it.</summary>
    public string Address => Services.GetRequiredService<ILocalSiloDetails>().SiloAddress.ToParsableString();

    public Uri Endpoint => new(Services.GetRequiredService<SiloApiEndpoint>().Url + "/");

    public SiloResources Resources => Services.GetRequiredService<SiloResources>();

    /// <summary>Completes once this silo's membership view holds <paramref name="count"/> active silos.</summary>
    public Task WaitForActiveAsync(int count, CancellationToken cancellationToken) =>
        WaitForMembershipAsync(s => s.Members.Values.Count(m => m.Status == SiloStatus.Active) == count, cancellationToken);

    /// <summary>Completes once this silo's membership view satisfies <paramref name="condition"/>.</summary>
    public async Task WaitForMembershipAsync(Func<ClusterMembershipSnapshot, bool> condition, CancellationToken cancellationToken)
    {
        IClusterMembershipService membership = Services.GetRequiredService<IClusterMembershipService>();
        if (condition(membership.CurrentSnapshot))
        {
            return;
        }

        await foreach (ClusterMembershipSnapshot snapshot in membership.MembershipUpdates.WithCancellation(cancellationToken).ConfigureAwait(false))
        {
            if (condition(snapshot))
            {
                return;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            await App.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            // Killed already: nothing left to stop.
        }

        await App.DisposeAsync().ConfigureAwait(false);
    }
}
