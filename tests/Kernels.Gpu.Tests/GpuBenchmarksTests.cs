using LongCluster.Tensors;

namespace LongCluster.Kernels.Gpu.Tests;

[Collection(IlgpuCollection.Name)]
public sealed class GpuBenchmarksTests(BackendFixture fixture)
{
    private readonly IlgpuBackend _backend = fixture.Backend;

    [Fact]
    public void SgemmGflops_CudaMeasures_CpuAcceleratorThrowsNotSupported()
    {
        if (_backend.IsCuda)
        {
            // bench/gpu.sh runs these tests on the device: there cuBLAS answers.
            Assert.True(GpuBenchmarks.SgemmGflops(_backend, 256, 256, 256, repetitions: 1) > 0);
            return;
        }

        var e = Assert.Throws<NotSupportedException>(() => GpuBenchmarks.SgemmGflops(_backend, 8, 8, 8));
        Assert.Equal("cuBLAS SGEMM needs a CUDA accelerator; this backend is ilgpu-cpu", e.Message);
    }

    [Theory]
    [InlineData(DType.F32, "full", 64L * 64)]
    [InlineData(DType.BF16, "causal", 64L * 65 / 2)]
    public void Forward_SmallShape_CountsLivePairsAndFlops(DType dtype, string mask, long pairs)
    {
        GpuBenchmarks.ForwardTiming timing = GpuBenchmarks.Forward(_backend, dtype, 4, 2, 16, 64, AttentionMask.Parse(mask), repetitions: 1);
        Assert.Equal(pairs, timing.LivePairs);
        Assert.Equal(4.0 * 16 * 4 * pairs, timing.Flops);
        Assert.True(timing.Seconds > 0);
    }

    [Fact]
    public void Decode_SmallShape_CountsKeyAndValueBytes()
    {
        GpuBenchmarks.BandwidthTiming timing = GpuBenchmarks.Decode(_backend, DType.BF16, 300, 4, 2, 16, repetitions: 1);
        Assert.Equal(2L * 300 * 2 * 16 * 2, timing.Bytes);
        Assert.True(timing.Seconds > 0);
    }

    [Fact]
    public void Copy_CountsBytesReadAndWritten()
    {
        GpuBenchmarks.BandwidthTiming timing = GpuBenchmarks.Copy(_backend, 4096, repetitions: 1);
        Assert.Equal(8192, timing.Bytes);
        Assert.True(timing.Seconds > 0);
    }

    [Fact]
    public void Forward_F16_IsRejectedNamingTheDtypes()
    {
        var e = Assert.Throws<ArgumentException>(() => GpuBenchmarks.Forward(_backend, DType.F16, 1, 1, 8, 8, AttentionMask.Full, 1));
        Assert.Equal("dtype", e.ParamName);
    }
}
