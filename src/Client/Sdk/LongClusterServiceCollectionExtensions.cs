using LongCluster.Client;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers <see cref="LongClusterClient"/> with the host's services.</summary>
public static class LongClusterServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="LongClusterClient"/> as a typed client of <c>IHttpClientFactory</c> (transient: each one
    /// keeps its own gateway rotation, while the factory pools the connections), configured by
    /// <paramref name="configure"/>. Retries stay in the client (gateway rotation is per attempt), so add no resilience
    /// handler to the builder returned; it is there for other handlers (certificates, proxies, logging).
    /// </summary>
    public static IHttpClientBuilder AddLongClusterClient(this IServiceCollection services, Action<LongClusterClientOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<LongClusterClientOptions>().Configure(configure);
        return services
            .AddHttpClient(nameof(LongClusterClient), http => http.Timeout = Timeout.InfiniteTimeSpan)
            .ConfigurePrimaryHttpMessageHandler(LongClusterClient.CreateHandler)
            .AddTypedClient((http, provider) => new LongClusterClient(http, provider.GetRequiredService<IOptions<LongClusterClientOptions>>().Value));
    }
}
