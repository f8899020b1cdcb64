namespace LongCluster.Kernels.Gpu.Tests;

/// <summary>
/// One backend for every test (kernels compile once per process): on ILGPU's CPU accelerator, or on the CUDA device
/// when <c>LONGCLUSTER_ILGPU_DEVICE=cuda</c> (bench/gpu.sh runs the same tests there; no device then fails every test).
/// </summary>
public sealed class BackendFixture : IDisposable
{
    public IlgpuBackend Backend { get; } = new(Environment.GetEnvironmentVariable("LONGCLUSTER_ILGPU_DEVICE") switch
    {
        null or "" or "cpu" => IlgpuDevice.Cpu,
        "cuda" => IlgpuDevice.Cuda,
        string other => throw new InvalidOperationException($"LONGCLUSTER_ILGPU_DEVICE must be cpu or cuda, got '{other}'"),
    });

    public void Dispose() => Backend.Dispose();
}

[CollectionDefinition(Name)]
public sealed class IlgpuCollection : ICollectionFixture<BackendFixture>
{
    public const string Name = "ilgpu";
}
