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
    private static unsafe void AssertAdvised(byte[] array)
    {
        if (!HugePagesBuiltIn)
        {
            return;
        }

        const long page = 2L << 20;
        long start, end;
        fixed (byte* pointer = array)
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
