using LongCluster.Client;

namespace LongCluster.Service.Tests;

/// <summary>Reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool, which would race the test).</summary>
internal sealed class SynchronousProgress(Action<PrefillProgress> report) : IProgress<PrefillProgress>
{
    public void Report(PrefillProgress value) => report(value);
}
