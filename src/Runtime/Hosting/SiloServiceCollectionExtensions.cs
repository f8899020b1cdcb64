using LongCluster.Runtime.Membership;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace LongCluster.Runtime.Hosting;

/// <summary>Wiring of a silo into a generic host; <c>src/Silo/Program.cs</c> only calls this and runs the host.</summary>
public static class SiloServiceCollectionExtensions
{
    /// <summary>
    /// Binds <see cref="SiloOptions"/> from <paramref name="configuration"/> (validated at start-up), registers the
    /// membership table the options name (in-memory or Redis) and a hosted service that starts the silo and, on
    /// SIGTERM, stops it gracefully.
    /// </summary>
    public static IServiceCollection AddLongClusterSilo(this IServiceCollection services, IConfiguration configuration, GrainTypeRegistry? grainTypes = null)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<SiloOptions>().Bind(configuration).ValidateOnStart();
        services.AddSingleton<IValidateOptions<SiloOptions>>(new Validator<SiloOptions>("LongCluster", o => o.Validate()));
        if (configuration["Membership"] == "Redis")
        {
            services.UseRedisClustering(o =>
            {
                o.ClusterId = configuration["ClusterId"] ?? o.ClusterId;
                configuration.GetSection("Redis").Bind(o.Redis);
            });
        }
        else
        {
            services.UseDevelopmentClustering();
        }

        services.AddSingleton(grainTypes ?? new GrainTypeRegistry());
        services.AddHostedService<SiloHostedService>();
        return services;
    }

    /// <summary>The embedded default: one in-memory membership table, for a single process.</summary>
    public static IServiceCollection UseDevelopmentClustering(this IServiceCollection services)
    {
        services.AddSingleton<IMembershipTable, InMemoryMembershipTable>();
        return services;
    }

    /// <summary>Membership in Redis: registers the table and validates its options at start-up.</summary>
    public static IServiceCollection UseRedisClustering(this IServiceCollection services, Action<RedisClusteringOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<RedisClusteringOptions>().Configure(configure).ValidateOnStart();
        services.AddSingleton<IValidateOptions<RedisClusteringOptions>>(new Validator<RedisClusteringOptions>("LongCluster Redis clustering", o => o.Validate()));
        services.AddSingleton<IMembershipTable>(provider => new RedisMembershipTable(provider.GetRequiredService<IOptions<RedisClusteringOptions>>().Value));
        return services;
    }

    /// <summary>Runs an options class's own Validate at start-up and reports its message, prefixed with where it came from.</summary>
    private sealed class Validator<TOptions>(string prefix, Action<TOptions> validate) : IValidateOptions<TOptions>
        where TOptions : class
    {
        public ValidateOptionsResult Validate(string? name, TOptions options)
        {
            try
            {
                validate(options);
                return ValidateOptionsResult.Success;
            }
            catch (ArgumentException e)
            {
                return ValidateOptionsResult.Fail($"{prefix}: {e.Message}");
            }
        }
    }

    private sealed class SiloHostedService(
        IOptions<SiloOptions> options, IMembershipTable table, GrainTypeRegistry grainTypes, IEnumerable<ISiloExtension> extensions, ILoggerFactory logging, IHostApplicationLifetime lifetime)
        : IHostedService
    {
        private Silo? _silo;

        public async Task StartAsync(CancellationToken cancellationToken)
        {
            _silo = await Silo.StartAsync(options.Value, table, grainTypes, TimeProvider.System, logging, cancellationToken, [.. extensions]).ConfigureAwait(false);

            // One line a supervisor (or a test) can wait for.
            Console.WriteLine($"LongCluster silo {_silo.Address} ready; http port {_silo.HttpPort}");
            _ = WatchForDeathAsync(_silo);
        }

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            if (_silo is not null)
            {
                await _silo.StopAsync(cancellationToken).ConfigureAwait(false);
                await _silo.DisposeAsync().ConfigureAwait(false);
            }
        }

        /// <summary>A silo the cluster declared dead must not keep serving: stop the process.</summary>
        private async Task WatchForDeathAsync(Silo silo)
        {
            try
            {
                await silo.Membership.WaitForViewAsync(_ => silo.Membership.DeclaredDead, lifetime.ApplicationStopping).ConfigureAwait(false);
                lifetime.StopApplication();
            }
            catch (OperationCanceledException)
            {
            }
        }
    }
}
