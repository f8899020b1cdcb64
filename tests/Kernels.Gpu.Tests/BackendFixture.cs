using LongCluster.Tensors;

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

/// <summary>Seeded inputs and the comparisons of tests/Kernels.Tests (TestData), for the same tolerances.</summary>
internal static class TestData
{
    public const double F32Tolerance = 1e-4;

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
            result[i] = typeof(T) == typeof(float) ? (T)(object)values[i]
                : typeof(T) == typeof(Half) ? (T)(object)(Half)values[i]
                : (T)(object)(BFloat16)values[i];
        }

        return result;
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
