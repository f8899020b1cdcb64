using System.Diagnostics;
using System.Globalization;
using LongCluster.Kernels;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster demo</c>, the README's main job: synthetic Q/K/V of a realistic shape, attention by the kernel on
/// this node, a sample of rows checked against the float64 reference, figures printed. Exit 1 if a sampled row is
/// off by more than the tolerance.
/// </summary>
internal static class DemoCommand
{
    /// <summary>Relative error allowed against the float64 reference (normwise over the sampled rows).</summary>
    private const double Tolerance = 1e-4;

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("demo", args, ["tokens", "hq", "hkv", "d", "mask", "dtype", "threads", "check-rows", "seed"], []);
        int tokens = options.Int("tokens", 8192, 1);
        (int hq, int hkv) = options.Heads(8, 2);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        int threads = options.Int("threads", Environment.ProcessorCount, 1);
        int checkRows = options.Int("check-rows", 64, 1);
        int seed = options.Int("seed", 1, 0);
        DType dtype = options.FloatType("dtype", "f32");
        string dtypeText = dtype.SafetensorsName().ToLowerInvariant();
        AttentionMask mask = options.Mask("causal");

        var shape = new AttentionShape(tokens, tokens, hq, hkv, d);
        stdout.WriteLine($"demo: {tokens} tokens, {hq} query heads, {hkv} KV heads, d = {d}, {dtypeText}, mask {mask}, {threads} threads (single node)");
        long started = Stopwatch.GetTimestamp();
        HostTensor q = TensorChecks.Synthetic(dtype, seed, tokens, hq, d);
        HostTensor k = TensorChecks.Synthetic(dtype, seed + 1, tokens, hkv, d);
        HostTensor v = TensorChecks.Synthetic(dtype, seed + 2, tokens, hkv, d);
        long[] positions = Enumerable.Range(0, tokens).Select(i => (long)i).ToArray();
        int[] documents = mask.Document ? positions.Select(p => (int)(p / 1024)).ToArray() : [];
        stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  inputs generated in {Stopwatch.GetElapsedTime(started).TotalSeconds:F2} s"));

        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        var attentionTokens = new AttentionTokens(positions, positions, documents, documents);
        started = Stopwatch.GetTimestamp();
        TensorChecks.Forward(q, k, v, shape, mask, attentionTokens, o, lse, new AttentionOptions { MaxThreads = threads });
        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
        long livePairs = mask.CountLivePairs(positions, positions, documents, documents);
        stdout.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  attention: {seconds * 1000:F1} ms, {shape.Flops(livePairs) / seconds / 1e9:F1} GFLOP/s over {livePairs} live pairs, {tokens / seconds:F0} tokens/s"));

        (double outputError, double lseError) = Verify(q, k, v, shape, mask, positions, documents, o, lse, checkRows, seed);
        bool ok = outputError <= Tolerance && lseError <= Tolerance;
        stdout.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"  verified {checkRows} sampled (row, head) pairs against the float64 reference: O rel error {outputError:E2}, LSE rel error {lseError:E2} (tolerance {Tolerance:E0}): {(ok ? "OK" : "FAILED")}"));
        return ok ? CliApp.ExitOk : CliApp.ExitFailed;
    }

    /// <summary>Checks sampled rows (the first, the last, and seeded random ones) against the reference; normwise relative errors.</summary>
    private static (double Output, double Lse) Verify(
        HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, long[] positions, int[] documents, float[] o, float[] lse, int rows, int seed)
    {
        float[] qf = q.ToSingle();
        float[] kf = k.ToSingle();
        float[] vf = v.ToSingle();
        var tokens = new AttentionTokens(positions, positions, documents, documents);
        var random = new Random(seed);
        var expected = new double[shape.HeadDim];
        double maxError = 0;
        double maxReference = 0;
        double lseError = 0;
        for (int i = 0; i < rows; i++)
        {
            int t = i == 0 ? 0 : i == 1 ? shape.QueryTokens - 1 : random.Next(shape.QueryTokens);
            int h = random.Next(shape.QueryHeads);
            double expectedLse = AttentionReference.Row<float>(qf, kf, vf, shape, mask, tokens, t, h, expected);
            long row = ((long)t * shape.QueryHeads) + h;
            for (int c = 0; c < shape.HeadDim; c++)
            {
                maxError = Math.Max(maxError, Math.Abs(o[(row * shape.HeadDim) + c] - expected[c]));
                maxReference = Math.Max(maxReference, Math.Abs(expected[c]));
            }

            lseError = Math.Max(lseError, double.IsNegativeInfinity(expectedLse)
                ? (float.IsNegativeInfinity(lse[row]) ? 0 : double.PositiveInfinity)
                : Math.Abs(lse[row] - expectedLse) / Math.Max(1, Math.Abs(expectedLse)));
        }

        return (maxReference == 0 ? maxError : maxError / maxReference, lseError);
    }
}
