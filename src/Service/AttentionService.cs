using LongCluster.Grains;
using LongCluster.Runtime;
using LongCluster.Runtime.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace LongCluster.Service;

/// <summary>
/// The attention service as a silo extension: the coordinator, shard and directory grains, the per-silo exchange hub
/// and resource limits, and the client HTTP API on the silo's Kestrel (every silo is a gateway).
/// </summary>
public sealed class AttentionService(AttentionServiceOptions options) : ISiloExtension
{
    public AttentionServiceOptions Options => options;

    public void RegisterGrains(GrainTypeRegistry grainTypes)
    {
        ArgumentNullException.ThrowIfNull(grainTypes);
        grainTypes.Add<ICoordinatorGrain, CoordinatorGrain>(s => new CoordinatorGrain(s.GetRequiredService<SiloContext>(), s.GetRequiredService<SiloResources>(), s.GetRequiredService<ExchangeHub>()), "coordinator");
        grainTypes.Add<ISequenceShardGrain, SequenceShardGrain>(
            s => new SequenceShardGrain(s.GetRequiredService<SiloResources>(), s.GetRequiredService<ExchangeHub>(), s.GetRequiredService<SiloContext>()),
            CoordinatorGrain.ShardType);
        grainTypes.Add<ISequenceDirectoryGrain, SequenceDirectoryGrain>(() => new SequenceDirectoryGrain(), "directory");
    }

    public void ConfigureServices(IServiceCollection services, SiloContext silo)
    {
        options.Validate();
        services.AddSingleton(options);
        services.AddSingleton(new SiloResources(options));
        services.AddSingleton(new ExchangeHub(silo));
    }

    public void Configure(WebApplication app, SiloContext silo) => ClientApi.Map(app, options);
}

/// <summary>Hosting the attention service in a generic-host silo (<c>src/Silo</c>, <c>longcluster silo</c>).</summary>
public static class AttentionServiceCollectionExtensions
{
    /// <summary>Binds <see cref="AttentionServiceOptions"/> from <paramref name="configuration"/> (validated at start-up) and adds the service to every silo of this host.</summary>
    public static IServiceCollection AddAttentionService(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddSingleton<IValidateOptions<AttentionServiceOptions>>(new ValidateService());
        services.AddOptions<AttentionServiceOptions>().Bind(configuration).ValidateOnStart();
        services.AddSingleton<ISiloExtension>(provider => new AttentionService(provider.GetRequiredService<IOptions<AttentionServiceOptions>>().Value));
        return services;
    }

    private sealed class ValidateService : IValidateOptions<AttentionServiceOptions>
    {
        public ValidateOptionsResult Validate(string? name, AttentionServiceOptions options)
        {
            try
            {
                options.Validate();
                return ValidateOptionsResult.Success;
            }
            catch (ArgumentException e)
            {
                return ValidateOptionsResult.Fail($"LongCluster service: {e.Message}");
            }
        }
    }
}
