namespace LongCluster.Cli.Tests;

/// <summary>The error measure <c>demo</c> and <c>bench load</c> judge outputs by.</summary>
public sealed class OutputCheckTests
{
    [Fact]
    public void Error_LseNearZero_IsJudgedAbsolutelyWithFloorOne()
    {
        // A decoded token alone in its document: its LSE is its own score, here -1.2e-4 (seen in a 10-minute bench
        // load); float rounding of 1.4e-8 is a relative error of 1.2e-4 against the LSE itself.
        float[] expected = [-1.2161653e-4f];
        float[] actual = [-1.2160253e-4f];
        Assert.True(DemoCommand.Error(expected, actual) > 1e-4);
        Assert.True(DemoCommand.Error(expected, actual, floor: 1) < 1e-7);
    }

    [Fact]
    public void Error_LargeLse_StaysRelative()
    {
        float[] expected = [200f, -3f];
        float[] actual = [200.05f, -3f];
        Assert.Equal(0.05 / 200, DemoCommand.Error(expected, actual, floor: 1), 6);
    }

    [Fact]
    public void Error_NegativeInfinity_MustMatchExactly()
    {
        Assert.Equal(0, DemoCommand.Error([float.NegativeInfinity, 1f], [float.NegativeInfinity, 1f], floor: 1));
        Assert.Equal(double.PositiveInfinity, DemoCommand.Error([float.NegativeInfinity], [-50f], floor: 1));
    }
}
