using LongCluster.Kernels.Backends;

namespace LongCluster.Kernels.Gpu;

/// <summary>
/// The one kernel backend of a process, by name: <c>cpu</c> (the SIMD kernels), <c>ilgpu</c> (ILGPU on the first CUDA
/// device, else on ILGPU's CPU accelerator) or <c>auto</c> (ILGPU on CUDA when a CUDA device is present, else the SIMD
/// kernels). The ILGPU backend is made once per process and shared by every caller — the silos of an in-process
/// cluster share one device, its budget and its pool —; the first caller's budget is the one it keeps.
/// </summary>
public static class KernelBackends
{
    private static readonly Lock Gate = new();
    private static IlgpuBackend? _ilgpu;
    private static bool? _cudaPresent;

    /// <param name="choice"><c>auto</c>, <c>cpu</c> or <c>ilgpu</c> (any case).</param>
    /// <param name="deviceBudgetBytes">Device bytes for kept KV segments; 0 = 80% of the device's memory.</param>
    public static IAttentionBackend ForProcess(string choice, long deviceBudgetBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(choice);
        return choice.ToLowerInvariant() switch
        {
            "cpu" => CpuBackend.Instance,
            "ilgpu" => Ilgpu(deviceBudgetBytes),
            "auto" => CudaPresent() ? Ilgpu(deviceBudgetBytes) : CpuBackend.Instance,
            _ => throw new ArgumentException($"kernel backend must be auto, cpu or ilgpu, got '{choice}'", nameof(choice)),
        };
    }

    private static IlgpuBackend Ilgpu(long deviceBudgetBytes)
    {
        lock (Gate)
        {
            return _ilgpu ??= new IlgpuBackend(IlgpuDevice.Auto, deviceBudgetBytes);
        }
    }

    /// <summary>Whether ILGPU sees a CUDA device (asked once per process).</summary>
    private static bool CudaPresent()
    {
        lock (Gate)
        {
            _cudaPresent ??= IlgpuBackend.CudaDeviceCount() > 0;
            return _cudaPresent.Value;
        }
    }
}
