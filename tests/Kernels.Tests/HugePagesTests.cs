using System.Globalization;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

/// <summary>
/// Large arrays carry the huge-page advice over their 2 MiB-aligned interior (<see cref="HugePages"/>): the kernel
/// shows it as the <c>hg</c> flag of the mappings in <c>/proc/self/smaps</c>, whether or not a huge page was free to
/// back them, so the check does not depend on the machine's memory.
/// </summary>
public sealed class HugePagesTests
{
    private const int LargeBytes = 12 << 20;

    // Without transparent huge pages built into the kernel there is no advice to look for.
    private static bool HugePagesBuiltIn => OperatingSystem.IsLinux() && File.Exists("/sys/kernel/mm/transparent_hugepage/enabled");

    [Fact]
    public void Allocate_LargeArray_Advised()
    {
        byte[] array = HugePages.Allocate<byte>(LargeBytes);
        array.AsSpan().Fill(7);
        AssertAdvised(array);
    }

    [Fact]
    public void Allocate_SmallArray_LeftAlone()
    {
        byte[] array = HugePages.Allocate<byte>((int)HugePages.MinBytes - 1);
        Assert.Equal((int)HugePages.MinBytes - 1, array.Length);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(4097)]
    public unsafe void AllocateAligned_LargeBuffer_StartsOnALine_AndIsAdvised(int extra)
    {
        int length = (int)HugePages.MinBytes + extra;
        Memory<byte> buffer = HugePages.AllocateAligned(length);
        Assert.Equal(length, buffer.Length);
        buffer.Span.Fill(9);
        fixed (byte* pointer = buffer.Span)
        {
            Assert.Equal(0, (long)pointer % HugePages.LineBytes);
        }

        Assert.Equal(9, buffer.Span[^1]);
        AssertAdvised(buffer);
    }

    [Fact]
    public void AllocateAligned_SmallBuffer_IsAWholeArray()
    {
        Memory<byte> buffer = HugePages.AllocateAligned(1000);
        Assert.Equal(1000, buffer.Length);
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(buffer, out ArraySegment<byte> segment));
        Assert.Equal(0, segment.Offset);
        Assert.Equal(1000, segment.Array!.Length);
    }

    [Fact]
    public unsafe void HostTensorFrom_LargeTensor_StartsOnALine()
    {
        var values = new BFloat16[(LargeBytes / 2) + 3];
        values[0] = (BFloat16)1.5f;
        values[^1] = (BFloat16)(-2f);
        HostTensor tensor = HostTensor.From<BFloat16>(values, values.Length);
        fixed (BFloat16* pointer = tensor.AsSpan<BFloat16>())
        {
            Assert.Equal(0, (long)pointer % HugePages.LineBytes);
        }

        Assert.Equal(values.Length * 2, tensor.Data.Length);
        Assert.Equal(1.5f, (float)tensor.AsSpan<BFloat16>()[0]);
        Assert.Equal(-2f, (float)tensor.AsSpan<BFloat16>()[^1]);
    }

    [Fact]
    public void HostTensorDataArray_WholeArray_IsTheTensorsOwn_SliceIsCopied()
    {
        byte[] whole = [1, 2, 3, 4];
        var tensor = new HostTensor(DType.F32, [1], whole);
        Assert.Same(whole, tensor.DataArray());

        var overWhole = new HostTensor(DType.F32, [1], whole.AsMemory());
        Assert.Same(whole, overWhole.DataArray());
        var inner = new HostTensor(DType.I32, [1], new byte[] { 9, 5, 6, 7, 8, 9 }.AsMemory(1, 4));
        byte[] copy = inner.DataArray();
        Assert.Equal([5, 6, 7, 8], copy);
        copy[0] = 0;
        Assert.Equal(5, inner.Data.Span[0]);
    }

    [Fact]
    public void HostTensorFrom_LargeTensor_Advised()
    {
        var values = new float[LargeBytes / sizeof(float)];
        values[^1] = 3.5f;
        HostTensor tensor = HostTensor.From<float>(values, values.Length);
        Assert.Equal(3.5f, tensor.AsSpan<float>()[^1]);
        AssertAdvised(tensor.Data);
    }

    [Fact]
    public void LargeBuffersRent_LargeBuffer_Advised()
    {
        byte[] buffer = LargeBuffers<byte>.Pool.Rent(LargeBytes);
        try
        {
            AssertAdvised(buffer);
        }
        finally
        {
            LargeBuffers<byte>.Pool.Return(buffer);
        }
    }

    [Fact]
    public void Advise_OrdinaryArray_Advised()
    {
        byte[] array = new byte[LargeBytes];
        HugePages.Advise(array);
        AssertAdvised(array);
    }

    /// <summary>Every mapping that overlaps the array's 2 MiB-aligned interior carries <c>hg</c>; at least one is found.</summary>
    private static unsafe void AssertAdvised(Memory<byte> array)
    {
        if (!HugePagesBuiltIn)
        {
            return;
        }

        const long page = 2L << 20;
        long start, end;
        fixed (byte* pointer = array.Span)
        {
            start = ((long)pointer + page - 1) & ~(page - 1);
            end = ((long)pointer + array.Length) & ~(page - 1);
        }

        var flags = new List<(string Range, bool Advised)>();
        string? range = null;
        bool overlaps = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash && long.TryParse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long low)
                && long.TryParse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long high))
            {
                range = line[..space];
                overlaps = low < end && high > start;
            }
            else if (overlaps && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                flags.Add((range!, line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Contains("hg")));
            }
        }

        Assert.NotEmpty(flags);
        Assert.All(flags, f => Assert.True(f.Advised, $"mapping {f.Range} under [{start:x}, {end:x}) lacks the hg flag"));
    }
}
