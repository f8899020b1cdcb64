using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

/// <summary>Seeded inputs and the comparisons every kernel test uses.</summary>
internal static class TestData
{
    public static float[] Random(int seed, long count, float amplitude = 1f)
    {
        var random = new Random(seed);
        var result = new float[count];
        for (long i = 0; i < count; i++)
        {
            result[i] = (float)((random.NextDouble() * 2) - 1) * amplitude;
        }

        return result;
    }

    public static T[] Convert<T>(float[] values)
        where T : unmanaged
    {
        var result = new T[values.Length];
        for (int i = 0; i < values.Length; i++)
        {
            result[i] = Cast<T>(values[i]);
        }

        return result;
    }

    private static T Cast<T>(float value)
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return (T)(object)value;
        }

        if (typeof(T) == typeof(Half))
        {
            return (T)(object)(Half)value;
        }

        return (T)(object)(BFloat16)value;
    }

    public static long[] Positions(int count, long start = 0, long stride = 1)
    {
        var result = new long[count];
        for (int i = 0; i < count; i++)
        {
            result[i] = start + (i * stride);
        }

        return result;
    }

    /// <summary>Document ids as a function of position, with documents of growing, irregular lengths (1, 1, 2, 2, 3, ...).</summary>
    public static int[] Documents(long[] positions) => positions.Select(p => (int)Math.Floor(Math.Sqrt(p * 3.0))).ToArray();

    /// <summary>Normwise relative check: max|a − e| ≤ rtol · max|e| for O; |a − e| ≤ rtol · max(1, |e|) for LSE; −∞ must match exactly.</summary>
    public static void AssertClose(float[] output, float[] lse, double[] expectedOutput, double[] expectedLse, double rtol, string context)
    {
        Assert.Equal(expectedOutput.Length, output.Length);
        double maxRef = expectedOutput.Length == 0 ? 0 : expectedOutput.Max(Math.Abs);
        double maxError = 0;
        for (int i = 0; i < output.Length; i++)
        {
            Assert.False(float.IsNaN(output[i]), $"{context}: O[{i}] is NaN");
            maxError = Math.Max(maxError, Math.Abs(output[i] - expectedOutput[i]));
        }

        Assert.True(maxError <= rtol * Math.Max(maxRef, 1e-30), $"{context}: O max error {maxError:E3} vs max |ref| {maxRef:E3} (rtol {rtol:E1})");
        for (int i = 0; i < lse.Length; i++)
        {
            if (double.IsNegativeInfinity(expectedLse[i]))
            {
                Assert.True(float.IsNegativeInfinity(lse[i]), $"{context}: LSE[{i}] = {lse[i]}, expected -inf (row sees no key)");
                continue;
            }

            double error = Math.Abs(lse[i] - expectedLse[i]);
            Assert.True(error <= rtol * Math.Max(1, Math.Abs(expectedLse[i])), $"{context}: LSE[{i}] = {lse[i]}, expected {expectedLse[i]}");
        }
    }

    /// <summary>The relative tolerance of f32 storage against the float64 reference.</summary>
    public const double F32Tolerance = 1e-4;

    /// <summary>A random call's inputs: Q, K, V of the shape and document ids derived from the positions.</summary>
    public sealed record Inputs<T>(T[] Q, T[] K, T[] V, long[] QueryPositions, long[] KeyPositions, int[] QueryDocuments, int[] KeyDocuments)
        where T : unmanaged
    {
        public AttentionTokens Tokens => new(QueryPositions, KeyPositions, QueryDocuments, KeyDocuments);
    }

    public static Inputs<T> Make<T>(AttentionShape shape, long[] qPositions, long[] kPositions, int seed)
        where T : unmanaged =>
        new(
            Convert<T>(Random(seed, shape.QueryElements)),
            Convert<T>(Random(seed + 1, shape.KeyValueElements)),
            Convert<T>(Random(seed + 2, shape.KeyValueElements)),
            qPositions,
            kPositions,
            Documents(qPositions),
            Documents(kPositions));
}
