namespace LongCluster.Service.Tests;

/// <summary>A silo keeps thread-pool threads for messaging beyond those its kernels hold (see <see cref="SiloBuilderExtensions.KeepThreadsForMessaging"/>).</summary>
public sealed class ThreadPoolFloorTests
{
    [Fact]
    public void KeepThreadsForMessaging_RaisesTheFloorAboveTheCores_AndNeverLowersIt()
    {
        ThreadPool.GetMinThreads(out int workers, out int completionPorts);
        int floor = Environment.ProcessorCount + SiloBuilderExtensions.MessagingThreads;
        try
        {
            // The runtime's default: one thread per core, all of which running kernels can hold.
            Assert.True(ThreadPool.SetMinThreads(Environment.ProcessorCount, completionPorts));
            SiloBuilderExtensions.KeepThreadsForMessaging();
            ThreadPool.GetMinThreads(out int raised, out int ports);
            Assert.Equal(floor, raised);
            Assert.Equal(completionPorts, ports);

            // A host that asked for more keeps it.
            Assert.True(ThreadPool.SetMinThreads(floor + 5, completionPorts));
            SiloBuilderExtensions.KeepThreadsForMessaging();
            ThreadPool.GetMinThreads(out int kept, out _);
            Assert.Equal(floor + 5, kept);
        }
        finally
        {
            ThreadPool.SetMinThreads(Math.Max(workers, floor), completionPorts);
        }
    }
}
