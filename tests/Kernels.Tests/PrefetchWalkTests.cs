using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels.Tests;

/// <summary>The decode kernel's prefetch walk asks for every line of its region once, a given number at a time.</summary>
public sealed unsafe class PrefetchWalkTests
{
    [Theory]
    [InlineData(3, 256, 512, 12)] // a head's slice of each row: 4 lines a row, rows 512 bytes apart
    [InlineData(3, 200, 512, 12)] // a row that ends inside a line asks for that line too
    [InlineData(2, 2048, 2048, 64)] // whole rows: one contiguous run
    [InlineData(0, 256, 512, 0)]
    public void Lines_CountsEveryLineOfTheRegion(int rows, int rowBytes, int strideBytes, int expected)
    {
        byte[] region = new byte[Math.Max(1, rows * strideBytes)];
        fixed (byte* start = region)
        {
            var walk = new PrefetchWalk(start, rows, rowBytes, strideBytes);
            Assert.Equal(Sse.IsSupported ? expected : 0, walk.Lines);
        }
    }

    [Fact]
    public void Next_TakesLinesInOrder_AcrossRows_AndStopsAtTheEnd()
    {
        byte[] region = new byte[3 * 512];
        fixed (byte* start = region)
        {
            var walk = new PrefetchWalk(start, 3, 256, 512);
            int total = walk.Lines;
            walk.Next(5); // the first row and one line of the second
            Assert.Equal(Math.Max(0, total - 5), walk.Lines);
            walk.Next(3); // the rest of the second row
            Assert.Equal(Math.Max(0, total - 8), walk.Lines);
            walk.Next(100);
            Assert.Equal(0, walk.Lines);
            walk.Next(1);
            Assert.Equal(0, walk.Lines);
        }
    }

    [Fact]
    public void NoRegion_IsAnEmptyWalk()
    {
        var walk = new PrefetchWalk(null, 64, 2048, 2048);
        Assert.Equal(0, walk.Lines);
        walk.Next(16);
        Assert.Equal(0, walk.Lines);
        Assert.Equal(0, default(PrefetchWalk).Lines);
    }
}
