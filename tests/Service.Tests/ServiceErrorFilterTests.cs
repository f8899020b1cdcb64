using LongCluster.Grains;
using LongCluster.Kernels.ContextParallel;
using Orleans.TestingHost;

namespace LongCluster.Service.Tests;

/// <summary>A grain that fails the way kernel code can: with an exception type Orleans has no codec for.</summary>
public interface IFaultyGrain : IGrainWithStringKey
{
    Task ThrowKernelFailureAsync();

    Task ThrowServiceFailureAsync();
}

internal sealed class FaultyGrain : Grain, IFaultyGrain
{
    public Task ThrowKernelFailureAsync() => throw new ContextParallelException(1, "step 2", new IOException("made up by the test"));

    public Task ThrowServiceFailureAsync() => throw ServiceException.Conflict("layer", "made up by the test");
}

/// <summary>What leaves a grain reaches the caller as a <see cref="ServiceException"/>, whatever its type was.</summary>
public sealed class ServiceErrorFilterTests : IAsyncLifetime
{
    private InProcessTestCluster _cluster = null!;

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(2);
        builder.ConfigureSilo((_, silo) => silo.AddAttentionService(new AttentionServiceOptions { ApiToken = "a filter test token, long enough" }));
        _cluster = builder.Build();
        await _cluster.DeployAsync();
    }

    public async Task DisposeAsync() => await _cluster.DisposeAsync();

    [Fact]
    public async Task ExceptionWithoutCodec_ArrivesAsInternalServiceException_NamingItsType()
    {
        ServiceException e = await Assert.ThrowsAsync<ServiceException>(() => _cluster.Client.GetGrain<IFaultyGrain>("k").ThrowKernelFailureAsync());
        Assert.Equal((ServiceErrorCode.Internal, false), (e.Code, e.Retryable));
        Assert.Contains("ContextParallelException: rank 1 failed at step 2: made up by the test", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServiceException_ArrivesUnchanged()
    {
        ServiceException e = await Assert.ThrowsAsync<ServiceException>(() => _cluster.Client.GetGrain<IFaultyGrain>("k").ThrowServiceFailureAsync());
        Assert.Equal((ServiceErrorCode.Conflict, "layer"), (e.Code, e.Field));
        Assert.Equal("layer: made up by the test", e.Message);
    }
}
