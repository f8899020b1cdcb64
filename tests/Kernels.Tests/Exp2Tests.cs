using System.Runtime.Intrinsics;

namespace LongCluster.Kernels.Tests;

public sealed class Exp2Tests
{
    [Fact]
    public void Vector_AcrossRange_RelativeErrorBelow1e6()
    {
        for (float x = -126f; x <= 20f; x += 0.0137f)
        {
            double expected = Math.Pow(2, x);
            float v256 = Exp2.Vector(Vector256.Create(x))[3];
            float v128 = Exp2.Vector(Vector128.Create(x))[1];
            Assert.True(Math.Abs(v256 - expected) <= 1e-6 * expected, $"2^{x}: {v256} vs {expected}");
            Assert.True(Math.Abs(v128 - expected) <= 1e-6 * expected, $"2^{x}: {v128} vs {expected}");
        }
    }

    [Fact]
    public void Vector_NegativeInfinity_IsExactlyZero()
    {
        Assert.Equal(0f, Exp2.Vector(Vector256.Create(float.NegativeInfinity))[0]);
        Assert.Equal(0f, Exp2.Vector(Vector128.Create(float.NegativeInfinity))[0]);
        Assert.Equal(0f, Exp2.Scalar(float.NegativeInfinity));
    }
}
