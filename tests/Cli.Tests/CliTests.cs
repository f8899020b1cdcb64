using System.Diagnostics;
using System.Globalization;
using LongCluster.Cli.Processes;
using System.Text.Json;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Cli.Tests;

public sealed class CliTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("lc-cli-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData("causal")]
    [InlineData("document-causal")]
    [InlineData("window:7")]
    public void Attend_F32File_WritesExactlyWhatTheKernelComputes(string mask)
    {
        var shape = new AttentionShape(40, 50, 4, 2, 24);
        float[] q = Random(1, shape.QueryElements);
        float[] k = Random(2, shape.KeyValueElements);
        float[] v = Random(3, shape.KeyValueElements);
        long[] qPositions = Enumerable.Range(10, 40).Select(i => (long)i).ToArray();
        int[] documents = Enumerable.Range(0, 60).Select(p => p / 13).ToArray();
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(q, 40, 4, 24),
            ["k"] = HostTensor.From<float>(k, 50, 2, 24),
            ["v"] = HostTensor.From<float>(v, 50, 2, 24),
            ["q_positions"] = HostTensor.From<long>(qPositions, 40),
            ["doc_ids"] = HostTensor.From<int>(documents, 60),
        });
        string output = Path.Combine(_directory, "out.safetensors");

        (int code, string stdout, string stderr) = Run("attend", "--input", input, "--output", output, "--mask", mask, "--threads", "2");

        Assert.True(code == 0, stderr);
        Assert.Contains("Tq=40 Tk=50 Hq=4 Hkv=2 d=24", stdout);
        var expectedO = new float[shape.QueryElements];
        var expectedLse = new float[shape.LseElements];
        int[] qDocuments = qPositions.Select(p => documents[p]).ToArray();
        int[] kDocuments = documents[..50];
        Attention.Forward<float>(q, k, v, shape, AttentionMask.Parse(mask), new AttentionTokens(qPositions, default, qDocuments, kDocuments), expectedO, expectedLse);
        using SafetensorsReader reader = SafetensorsReader.Open(output);
        HostTensor o = reader.Read("o");
        HostTensor lse = reader.Read("lse");
        Assert.Equal([40L, 4, 24], o.Shape);
        Assert.Equal([40L, 4], lse.Shape);
        Assert.Equal(expectedO, o.AsSpan<float>().ToArray());
        Assert.Equal(expectedLse, lse.AsSpan<float>().ToArray());
    }

    [Theory]
    [InlineData(new int[0], 0)]
    [InlineData(new[] { 40, 1, 1, 58 }, 0)]
    [InlineData(new[] { 40, 1, 1, 58 }, 3)]
    public void Attend_RetrievalMask_MatchesTheRulesReference(int[] requests, int localCluster)
    {
        // 100 tokens, blocks of 8 after 4 init positions and a window of 16: chunks from 48 on choose 2 of 3+ evicted blocks.
        const string Mask = "retrieval:block=8,repr=2,topk=2,init=4,local=16,chunk=8";
        var shape = new AttentionShape(100, 100, 4, 2, 16);
        BFloat16[] q = Random(1, shape.QueryElements).Select(x => (BFloat16)x).ToArray();
        BFloat16[] k = Random(2, shape.KeyValueElements).Select(x => (BFloat16)x).ToArray();
        BFloat16[] v = Random(3, shape.KeyValueElements).Select(x => (BFloat16)x).ToArray();
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<BFloat16>(q, 100, 4, 16),
            ["k"] = HostTensor.From<BFloat16>(k, 100, 2, 16),
            ["v"] = HostTensor.From<BFloat16>(v, 100, 2, 16),
        });
        string output = Path.Combine(_directory, "out.safetensors");
        string[] requestOption = requests.Length > 0 ? ["--requests", string.Join(',', requests)] : [];

        string[] clusterOption = localCluster > 0 ? ["--local-cluster", localCluster.ToString(CultureInfo.InvariantCulture)] : [];

        (int code, string stdout, string stderr) = Run(["attend", "--input", input, "--output", output, "--mask", Mask, .. requestOption, .. clusterOption]);

        Assert.True(code == 0, stderr);
        Assert.Contains($"Tq=100 Tk=100 Hq=4 Hkv=2 d=16 BF16 mask={Mask}", stdout);
        (double[] refO, double[] refLse) = RetrievalReference.Forward<BFloat16>(q, k, v, shape, RetrievalRule.Parse(Mask), requests);
        using SafetensorsReader reader = SafetensorsReader.Open(output);
        Assert.Equal(Mask, reader.Metadata["mask"]);
        float[] o = reader.Read("o").AsSpan<float>().ToArray();
        float[] lse = reader.Read("lse").AsSpan<float>().ToArray();
        double maxRef = refO.Max(Math.Abs);
        Assert.All(Enumerable.Range(0, o.Length), i => Assert.True(Math.Abs(o[i] - refO[i]) <= 1e-4 * maxRef, $"O[{i}]"));
        Assert.All(Enumerable.Range(0, lse.Length), i => Assert.True(Math.Abs(lse[i] - refLse[i]) <= 1e-4 * Math.Max(1, Math.Abs(refLse[i])), $"LSE[{i}]"));
    }

    [Theory]
    [InlineData(new[] { "attend", "--mask", "retrieval", "--shards", "2" }, "attend: --shards: the retrieval mask runs on one shard")]
    [InlineData(new[] { "attend", "--mask", "retrieval", "--layout", "zigzag" }, "attend: --layout: the retrieval mask runs on one shard")]
    [InlineData(new[] { "attend", "--mask", "retrieval", "--backend", "ilgpu" }, "attend: --backend: the retrieval mask runs on the CPU kernels only")]
    [InlineData(new[] { "attend", "--mask", "retrieval:block=0" }, "attend: --mask: mask 'retrieval:block=0': block must be >= 1, got 0")]
    [InlineData(new[] { "attend", "--mask", "retrieval:topk=2,speed=9" }, "unknown parameter 'speed'")]
    [InlineData(new[] { "attend", "--mask", "causal", "--requests", "3,4" }, "attend: --requests applies to the retrieval mask only")]
    [InlineData(new[] { "attend", "--mask", "retrieval", "--requests", "3,0" }, "attend: --requests must be a comma-separated list of integers in 1..")]
    [InlineData(new[] { "bench", "ring", "--mask", "retrieval" }, "bench ring: --mask: mask 'retrieval' is the retrieval rule")]
    [InlineData(new[] { "bench", "decode", "--mask", "retrieval:topk=4" }, "runs in longcluster attend")]
    [InlineData(new[] { "demo", "--mask", "retrieval" }, "runs in longcluster attend")]
    [InlineData(new[] { "plan", "--tokens", "1024", "--shards", "2", "--mask", "retrieval" }, "runs in longcluster attend")]
    public void Retrieval_WhereNotSupported_Exit2WithTheReason(string[] args, string expected)
    {
        string[] withInput = args[0] == "attend" ? [.. args, "--input", "x.safetensors", "--output", "y.safetensors"] : args;
        (int code, _, string stderr) = Run(withInput);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Attend_RetrievalRequestsNotTheTokens_RefusedWithTheCounts()
    {
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, 10 * 2 * 4), 10, 2, 4),
            ["k"] = HostTensor.From<float>(Random(2, 10 * 2 * 4), 10, 2, 4),
            ["v"] = HostTensor.From<float>(Random(3, 10 * 2 * 4), 10, 2, 4),
        });
        (int code, _, string stderr) = Run("attend", "--input", input, "--output", Path.Combine(_directory, "o.safetensors"), "--mask", "retrieval", "--requests", "4,5");
        Assert.NotEqual(0, code);
        Assert.Contains("--requests adds up to 9 rows, not the 10 tokens of q", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Attend_MixedF16AndBF16_MatchesReferenceOnRoundedInputs()
    {
        var shape = new AttentionShape(30, 30, 2, 1, 16);
        Half[] q = Random(1, shape.QueryElements).Select(x => (Half)x).ToArray();
        BFloat16[] k = Random(2, shape.KeyValueElements).Select(x => (BFloat16)x).ToArray();
        BFloat16[] v = Random(3, shape.KeyValueElements).Select(x => (BFloat16)x).ToArray();
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<Half>(q, 30, 2, 16),
            ["k"] = HostTensor.From<BFloat16>(k, 30, 1, 16),
            ["v"] = HostTensor.From<BFloat16>(v, 30, 1, 16),
        });
        string output = Path.Combine(_directory, "out.safetensors");

        (int code, _, string stderr) = Run("attend", "--input", input, "--output", output, "--mask", "causal");

        Assert.True(code == 0, stderr);
        float[] qf = q.Select(x => (float)x).ToArray();
        float[] kf = k.Select(x => (float)x).ToArray();
        float[] vf = v.Select(x => (float)x).ToArray();
        (double[] refO, _) = AttentionReference.Forward<float>(qf, kf, vf, shape, AttentionMask.Causal, default);
        using SafetensorsReader reader = SafetensorsReader.Open(output);
        float[] o = reader.Read("o").AsSpan<float>().ToArray();
        double maxRef = refO.Max(Math.Abs);
        Assert.All(Enumerable.Range(0, o.Length), i => Assert.True(Math.Abs(o[i] - refO[i]) <= 1e-4 * maxRef));
    }

    [Theory]
    [InlineData("zigzag", "4", "causal")]
    [InlineData("striped:2", "3", "document-causal")]
    [InlineData("ulysses", "2", "window:9")]
    [InlineData("hybrid:2", "4", "full")]
    public void Attend_Sharded_SameNumbersAsSingleNode(string layout, string shards, string mask)
    {
        string stdout = AttendAgainstSingleNode(mask, "--shards", shards, "--layout", layout);
        Assert.Contains($"shards={shards} layout={layout}", stdout);
    }

    [Theory]
    [InlineData("causal", 2)]
    [InlineData("full", 3)]
    public void Attend_ShardedLayoutAuto_RunsTheModelsChoiceExactly(string mask, int shards)
    {
        string stdout = AttendAgainstSingleNode(mask, "--shards", shards.ToString(CultureInfo.InvariantCulture), "--layout", "auto");
        ContextLayout chosen = LayoutPlanner.Choose(shards, new ChunkShape(45, 4, 2, 16, 4, AttentionMask.Parse(mask)), HardwareProfile.Load("this-machine")).Layout;
        Assert.Contains($"shards={shards} layout={chosen}", stdout);
        if (mask == "full")
        {
            // Ring layouts tie under a full mask: contiguous.
            Assert.Equal(ContextLayout.Contiguous, chosen);
        }
    }

    /// <summary>
    /// Runs attend on 45 tokens (4:2 heads, d = 16, documents of 10) on this node and again with <paramref name="extra"/>;
    /// asserts both outputs agree to 1e-4 of the largest value and returns the second run's stdout.
    /// </summary>
    private string AttendAgainstSingleNode(string mask, params string[] extra)
    {
        var shape = new AttentionShape(45, 45, 4, 2, 16);
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, shape.QueryElements), 45, 4, 16),
            ["k"] = HostTensor.From<float>(Random(2, shape.KeyValueElements), 45, 2, 16),
            ["v"] = HostTensor.From<float>(Random(3, shape.KeyValueElements), 45, 2, 16),
            ["doc_ids"] = HostTensor.From<int>(Enumerable.Range(0, 45).Select(p => p / 10).ToArray(), 45),
        });
        string single = Path.Combine(_directory, "single.safetensors");
        string other = Path.Combine(_directory, "other.safetensors");

        Assert.Equal(0, Run("attend", "--input", input, "--output", single, "--mask", mask).Code);
        (int code, string stdout, string stderr) = Run(["attend", "--input", input, "--output", other, "--mask", mask, .. extra]);

        Assert.True(code == 0, stderr);
        using SafetensorsReader a = SafetensorsReader.Open(single);
        using SafetensorsReader b = SafetensorsReader.Open(other);
        float[] o1 = a.Read("o").AsSpan<float>().ToArray();
        float[] o2 = b.Read("o").AsSpan<float>().ToArray();
        double maxRef = o1.Max(Math.Abs);
        Assert.All(Enumerable.Range(0, o1.Length), i => Assert.True(Math.Abs(o1[i] - o2[i]) <= 1e-4 * maxRef, $"O[{i}]"));
        return stdout;
    }

    [Theory]
    [InlineData("document-causal")]
    [InlineData("window:7", "--shards", "3", "--layout", "zigzag")]
    [InlineData("causal", "--shards", "2", "--layout", "striped")]
    public void Attend_BackendIlgpu_EqualsCpuKernel(string mask, params string[] extra)
    {
        // No CUDA device here: the ILGPU kernels run on ILGPU's CPU accelerator (where a device exists, on it).
        _ = AttendAgainstSingleNode(mask, [.. extra, "--backend", "ilgpu"]);
    }

    [Theory]
    [InlineData(new[] { "attend", "--backend", "gpu" }, "attend: --backend must be cpu or ilgpu, got 'gpu'")]
    [InlineData(new[] { "bench", "gpu", "--device", "tpu" }, "bench gpu: --device must be cuda or cpu, got 'tpu'")]
    [InlineData(new[] { "bench", "gpu", "--dtypes", "f16" }, "bench gpu: --dtypes lists f32 and/or bf16, got 'f16'")]
    public void Backend_BadChoice_Exit2NamingTheOption(string[] args, string expected)
    {
        string[] withInput = args[0] == "attend" ? [.. args, "--input", "x.safetensors", "--output", "y.safetensors"] : args;
        (int code, _, string stderr) = Run(withInput);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
    }

    [Fact]
    public void BenchGpu_Probe_Exit3WithoutCuda_Exit0WithIt()
    {
        (int code, string stdout, string stderr) = Run("bench", "gpu", "--probe");
        if (Kernels.Gpu.IlgpuBackend.CudaDeviceCount() == 0)
        {
            Assert.Equal(3, code);
            Assert.Contains("no CUDA device found", stderr);
        }
        else
        {
            Assert.Equal(0, code);
            Assert.Contains("(ilgpu-cuda)", stdout);
        }
    }

    [Fact]
    public void BenchGpu_CpuAccelerator_EveryCaseMeasured_JsonLast()
    {
        (int code, string stdout, string stderr) = Run(
            "bench", "gpu", "--device", "cpu", "--tokens", "40,70", "--hq", "4", "--hkv", "2", "--d", "16", "--masks", "causal", "--decode-tk", "700", "--repeat", "1");
        Assert.True(code == 0, stderr);
        using var json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        JsonElement root = json.RootElement;
        Assert.Equal("ilgpu-cpu", root.GetProperty("backend").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("sgemm_gflops").ValueKind);
        Assert.Equal(
            ["f32 40", "f32 70", "bf16 40", "bf16 70"],
            root.GetProperty("forward").EnumerateArray().Select(f => $"{f.GetProperty("dtype").GetString()} {f.GetProperty("tokens").GetInt32()}"));
        Assert.All(root.GetProperty("forward").EnumerateArray(), f => Assert.True(f.GetProperty("ms").GetDouble() > 0));
        Assert.All(root.GetProperty("decode").EnumerateArray(), d => Assert.True(d.GetProperty("copy_gbps").GetDouble() > 0));
        Assert.Equal(2, root.GetProperty("decode").GetArrayLength());
    }

    [Theory]
    [InlineData(new[] { "--shards", "3", "--layout", "ulysses" }, "the Ulysses degree 3 must divide the query heads (4)")]
    [InlineData(new[] { "--shards", "2", "--layout", "ring" }, "--layout: layout 'ring' is not one of")]
    public void Attend_ShardedBadLayout_Exit2(string[] extra, string expected)
    {
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, 80), 5, 4, 4),
            ["k"] = HostTensor.From<float>(Random(2, 20), 5, 1, 4),
            ["v"] = HostTensor.From<float>(Random(3, 20), 5, 1, 4),
        });
        (int code, _, string stderr) = Run(["attend", "--input", input, "--output", Path.Combine(_directory, "o.safetensors"), .. extra]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
    }

    [Fact]
    public void Plan_CausalZigzag_BalancedAndJsonLast()
    {
        (int code, string stdout, _) = Run("plan", "--tokens", "4096", "--shards", "4", "--layout", "zigzag", "--mask", "causal");
        Assert.Equal(0, code);
        Assert.Contains("imbalance (sum of step max / sum of step mean): 1.0000", stdout);
        using JsonDocument json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        Assert.Equal(4, json.RootElement.GetProperty("live_pairs").GetArrayLength());
        // 4096 tokens, 8 heads, d = 128, f32: a 1024-token block is 1024 · (2 · 8 · 128 · 4 + 8) bytes, sent 3 times.
        Assert.Equal(3L * 1024 * ((2 * 8 * 128 * 4) + 8), json.RootElement.GetProperty("bytes_sent")[0].GetInt64());
    }

    [Fact]
    public void Plan_CausalContiguous_ShowsSkippedBlocksAndImbalance()
    {
        (int code, string stdout, _) = Run("plan", "--tokens", "4096", "--shards", "4", "--layout", "contiguous");
        Assert.Equal(0, code);
        Assert.Contains("skip", stdout);
        Assert.Contains("imbalance (sum of step max / sum of step mean): 1.7", stdout);
    }

    public static TheoryData<string, string> BadInputs() => new()
    {
        { "nan", "tensor 'q' has a non-finite value NaN at [1, 0, 2]" },
        { "heads", "q has 3 heads and k has 2: the query heads must be a positive multiple of the KV heads" },
        { "kv-shape", "k has shape [5, 1, 4] but v has [6, 1, 4]" },
        { "head-dim", "q has head dim 8 but k has 4" },
        { "dtype", "tensor 'q' has dtype I32, expected F32 or F16 or BF16" },
        { "rank", "tensor 'k' has shape [5, 4] (2 dimensions), expected 3 dimensions" },
        { "missing-v", "no tensor named 'v'" },
        { "positions", "k_positions has 3 entries, expected 5 (one per row)" },
        { "doc-range", "k row 4 is at position 4, but doc_ids has only 4 entries" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Attend_BadInput_Exit2NamesTheProblemAndWritesNothing(string kind, string expected)
    {
        float[] q = Random(1, 5 * 2 * 4);
        q[(1 * 2 * 4) + 2] = kind == "nan" ? float.NaN : q[10];
        var tensors = new Dictionary<string, HostTensor>
        {
            ["q"] = kind switch
            {
                "heads" => HostTensor.From<float>(Random(1, 5 * 3 * 4), 5, 3, 4),
                "head-dim" => HostTensor.From<float>(Random(1, 5 * 2 * 8), 5, 2, 8),
                "dtype" => HostTensor.From<int>(new int[40], 5, 2, 4),
                _ => HostTensor.From<float>(q, 5, 2, 4),
            },
            ["k"] = kind == "rank" ? HostTensor.From<float>(Random(2, 20), 5, 4) : HostTensor.From<float>(Random(2, 20), 5, 1, 4),
            ["v"] = kind == "kv-shape" ? HostTensor.From<float>(Random(3, 24), 6, 1, 4) : HostTensor.From<float>(Random(3, 20), 5, 1, 4),
        };
        if (kind == "heads")
        {
            tensors["k"] = HostTensor.From<float>(Random(2, 40), 5, 2, 4);
            tensors["v"] = HostTensor.From<float>(Random(3, 40), 5, 2, 4);
        }

        if (kind == "missing-v")
        {
            tensors.Remove("v");
        }

        if (kind == "positions")
        {
            tensors["k_positions"] = HostTensor.From<long>([0, 1, 2], 3);
        }

        string mask = "full";
        if (kind == "doc-range")
        {
            tensors["doc_ids"] = HostTensor.From<int>([0, 0, 1, 1], 4);
            tensors["q_positions"] = HostTensor.From<long>([0, 1, 2, 3, 3], 5);
            mask = "document";
        }

        string input = WriteInput(tensors);
        string output = Path.Combine(_directory, "never.safetensors");

        (int code, _, string stderr) = Run("attend", "--input", input, "--output", output, "--mask", mask);

        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.False(File.Exists(output));
    }

    [Theory]
    [InlineData(new[] { "attend", "--output", "x" }, "--input is required")]
    [InlineData(new[] { "attend", "--input", "a", "--output", "b", "--mask", "diagonal" }, "--mask: mask 'diagonal' is not one of")]
    [InlineData(new[] { "attend", "--input", "a", "--output", "b", "--threads", "0" }, "--threads must be an integer >= 1")]
    [InlineData(new[] { "attend", "--input", "a", "--output", "b", "--scale", "nan" }, "--scale must be a finite number")]
    [InlineData(new[] { "attend", "--inptu", "a" }, "unknown option --inptu")]
    [InlineData(new[] { "attend", "--input", "/nonexistent/x.safetensors", "--output", "b" }, "cannot open")]
    [InlineData(new[] { "frobnicate" }, "unknown command 'frobnicate'")]
    [InlineData(new[] { "bench", "kernel", "--hq", "6", "--hkv", "4" }, "--hq (6) must be a multiple of --hkv (4)")]
    [InlineData(new[] { "bench", "decode", "--tk", "0" }, "--tk must be an integer >= 1")]
    [InlineData(new[] { "bench", "decode", "--hq", "4" }, "--hq (4) must be a multiple of --hkv (8)")]
    [InlineData(new[] { "bench", "decode", "--dtype", "f64" }, "--dtype must be f32, f16 or bf16")]
    [InlineData(new[] { "bench", "decode", "--tk", "1048576" }, "a bf16 tensor of shape [1048576, 8, 128] would take 2048 MiB; one tensor holds at most 2047 MiB")]
    [InlineData(new[] { "bench", "kernel", "--tq", "16", "--against", "sideways" }, "--against: mask 'sideways' is not one of")]
    [InlineData(new[] { "bench", "decode", "--tk", "64", "--sgemv", "/nonexistent/libopenblas.so.0" }, "--sgemv: cannot load '/nonexistent/libopenblas.so.0' as a shared library")]
    [InlineData(new[] { "bench", "decode", "--tk", "64", "--sgemv", "libc.so.6" }, "--sgemv: 'libc.so.6' has no cblas_sgemv: it is not an OpenBLAS build")]
    [InlineData(new[] { "bench" }, "'bench decode', 'bench ring', 'bench transport', 'bench control', 'bench load', 'bench scaling', 'bench gpu' or 'bench retrieval'")]
    [InlineData(new[] { "bench", "scaling", "--silos", "0" }, "bench scaling: --silos takes a comma-separated list of silo counts in 1..64, got '0' in '0'")]
    [InlineData(new[] { "bench", "scaling", "--silos", "1,x" }, "bench scaling: --silos takes a comma-separated list of silo counts in 1..64, got 'x' in '1,x'")]
    [InlineData(new[] { "bench", "scaling", "--silos", "2,2" }, "bench scaling: --silos lists 2 twice")]
    [InlineData(new[] { "bench", "scaling", "--layouts", "zigzag,ring" }, "bench scaling: --layouts: layout 'ring' is not one of")]
    [InlineData(new[] { "bench", "scaling", "--layouts", "zigzag,zigzag" }, "bench scaling: --layouts lists zigzag twice")]
    [InlineData(new[] { "bench", "scaling", "--link", "10gbps:50us" }, "bench scaling: --link: expected RATE:LATENCY such as 10gbit:50us")]
    [InlineData(new[] { "bench", "scaling", "--layers", "1" }, "bench scaling: --layers must be an integer in 2..1024, got '1'")]
    [InlineData(new[] { "bench", "scaling", "--kill-silo-after-layers", "2" }, "bench scaling: --kill-silo-after-layers must be an integer in 1..1, got '2'")]
    [InlineData(new[] { "bench", "scaling", "--hq", "6", "--hkv", "4" }, "bench scaling: --hq (6) must be a multiple of --hkv (4)")]
    [InlineData(new[] { "bench", "scaling", "--dtype", "f64" }, "bench scaling: --dtype must be f32, f16 or bf16, got 'f64'")]
    [InlineData(new[] { "bench", "scaling", "--tokens", "0" }, "bench scaling: --tokens must be an integer >= 1, got '0'")]
    [InlineData(new[] { "bench", "control", "--endpoint", "http://127.0.0.1:1", "--local-cluster", "2" }, "bench control: give --endpoint URL (a running cluster) or --local-cluster N (silos in this process), not both")]
    [InlineData(new[] { "bench", "control", "--requests", "0" }, "--requests must be an integer >= 1")]
    [InlineData(new[] { "bench", "load", "--clients", "0" }, "bench load: --clients must be an integer in 1..1024, got '0'")]
    [InlineData(new[] { "bench", "load", "--endpoint", "http://127.0.0.1:1", "--token", "t", "--local-cluster", "2" }, "bench load: give --endpoint URL (a running cluster) or --local-cluster N")]
    [InlineData(new[] { "bench", "load", "--minutes", "0" }, "bench load: --minutes must be a number in (0, 10080], got '0'")]
    [InlineData(new[] { "bench", "load", "--minutes", "1", "--seconds", "5" }, "bench load: give --minutes or --seconds, not both")]
    [InlineData(new[] { "bench", "load", "--endpoint", "ftp://x" }, "bench load: --endpoint expects an http(s) URL of a silo, got 'ftp://x'")]
    [InlineData(new[] { "bench", "load", "--token", "t" }, "bench load: --token goes with --endpoint")]
    [InlineData(new[] { "demo", "--dtype", "f64" }, "--dtype must be f32, f16 or bf16")]
    [InlineData(new[] { "demo", "--mask", "full" }, "decode needs a mask under which earlier tokens cannot see later ones")]
    [InlineData(new[] { "silo", "--redis", "127.0.0.1:6379" }, "with --redis, every silo needs the same --token")]
    [InlineData(new[] { "silo", "--redis", "127.0.0.1:6379", "--token", "0123456789abcdef" }, "Redis clustering needs silo-to-silo TLS")]
    [InlineData(new[] { "silo", "--tls-cert", "/nonexistent/c.pem" }, "Tls:CertificateFile: no file '/nonexistent/c.pem'")]
    public void Run_BadUsage_Exit2WithMessage(string[] args, string expected)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(2, CliApp.Run(args, stdout, stderr));
        Assert.Contains(expected, stderr.ToString());
    }

    [Fact]
    public void Attend_DocumentMaskWithoutDocIds_Exit2()
    {
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, 8), 2, 1, 4),
            ["k"] = HostTensor.From<float>(Random(2, 8), 2, 1, 4),
            ["v"] = HostTensor.From<float>(Random(3, 8), 2, 1, 4),
        });
        (int code, _, string stderr) = Run("attend", "--input", input, "--output", Path.Combine(_directory, "o.safetensors"), "--mask", "document-causal");
        Assert.Equal(2, code);
        Assert.Contains("needs a 'doc_ids' tensor", stderr);
    }

    [Fact]
    public void Attend_TruncatedInput_Exit2SaysTruncated()
    {
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, 8), 2, 1, 4),
            ["k"] = HostTensor.From<float>(Random(2, 8), 2, 1, 4),
            ["v"] = HostTensor.From<float>(Random(3, 8), 2, 1, 4),
        });
        byte[] bytes = File.ReadAllBytes(input);
        File.WriteAllBytes(input, bytes[..^5]);
        (int code, _, string stderr) = Run("attend", "--input", input, "--output", Path.Combine(_directory, "o.safetensors"));
        Assert.Equal(2, code);
        Assert.Contains("run past the end of the data", stderr);
    }

    [Fact]
    public void BenchKernel_SmallShape_LastLineIsJsonWithFigures()
    {
        (int code, string stdout, _) = Run("bench", "kernel", "--tq", "100", "--tk", "300", "--hq", "4", "--hkv", "2", "--d", "64", "--mask", "causal", "--repeat", "2", "--threads", "1");
        Assert.Equal(0, code);
        string last = stdout.TrimEnd().Split('\n')[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        Assert.True(json.RootElement.GetProperty("gflops").GetDouble() > 0);
        Assert.True(json.RootElement.GetProperty("ms").GetDouble() > 0);
        Assert.Equal(100 * 300 - (100 * 99 / 2), json.RootElement.GetProperty("live_pairs").GetInt64());
        Assert.Equal("causal", json.RootElement.GetProperty("mask").GetString());
    }

    [Fact]
    public void BenchKernel_Against_TimesBothMasksInOneRunAndGivesTheirRatio()
    {
        (int code, string stdout, string stderr) = Run("bench", "kernel", "--tq", "200", "--hq", "2", "--d", "32", "--mask", "causal", "--against", "full", "--repeat", "3", "--threads", "1");
        Assert.True(code == 0, stderr);
        string last = stdout.TrimEnd().Split('\n')[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        JsonElement root = json.RootElement;
        Assert.Equal("causal", root.GetProperty("mask").GetString());
        Assert.Equal("full", root.GetProperty("against").GetString());
        Assert.Equal(200 * 201 / 2, root.GetProperty("live_pairs").GetInt64());
        double ms = root.GetProperty("ms").GetDouble();
        double againstMs = root.GetProperty("against_ms").GetDouble();
        Assert.True(ms > 0 && againstMs > 0);
        Assert.Equal(ms / againstMs, root.GetProperty("time_ratio").GetDouble(), tolerance: 0.01);
        Assert.Contains("causal / full time, calls alternating:", stdout);
    }

    /// <summary>Debian's OpenBLAS (libopenblas0-pthread), which test.sh installs and bench/kernel.sh measures against.</summary>
    private const string OpenBlas = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0";

    [Fact]
    public void OpenBlasGemv_Run_GivesAxAgainstADoubleSum()
    {
        using OpenBlasGemv gemv = OpenBlasGemv.Load(OpenBlas, 300 * OpenBlasGemv.Columns * sizeof(float), threads: 2);
        Assert.Equal(300, gemv.Rows);
        Assert.Equal(300L * OpenBlasGemv.Columns * sizeof(float), gemv.Bytes);
        Assert.False(string.IsNullOrWhiteSpace(gemv.Core));
        gemv.Run();
        for (int r = 0; r < gemv.Rows; r++)
        {
            double expected = 0;
            for (int c = 0; c < OpenBlasGemv.Columns; c++)
            {
                expected += (double)gemv.Matrix[(r * OpenBlasGemv.Columns) + c] * gemv.Input[c];
            }

            Assert.Equal(expected, gemv.Output[r], tolerance: 1e-5 * Math.Max(1, Math.Abs(expected)));
        }
    }

    [Fact]
    public void BenchDecode_Sgemv_TimesOpenBlasInTheSameRunAndGivesTheRatio()
    {
        (int code, string stdout, string stderr) = Run("bench", "decode", "--tk", "3000", "--hq", "4", "--hkv", "2", "--d", "64", "--repeat", "3", "--threads", "2", "--sgemv", OpenBlas);
        Assert.True(code == 0, stderr);
        string last = stdout.TrimEnd().Split('\n')[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        JsonElement root = json.RootElement;
        long kAndV = 2L * 3000 * 2 * 64 * 2;
        Assert.Equal(kAndV, root.GetProperty("bytes").GetInt64());
        // Whole rows of 4096 floats, as close to K and V's bytes as they come.
        Assert.Equal((long)Math.Round(kAndV / (4.0 * OpenBlasGemv.Columns)) * OpenBlasGemv.Columns * 4, root.GetProperty("sgemv_bytes").GetInt64());
        double sgemvGbps = root.GetProperty("sgemv_gbps").GetDouble();
        Assert.True(sgemvGbps > 0);
        Assert.Equal(root.GetProperty("sgemv_bytes").GetInt64() / (root.GetProperty("sgemv_ms").GetDouble() / 1000) / 1e9, sgemvGbps, tolerance: 0.01 * sgemvGbps);
        Assert.Equal(root.GetProperty("gbps").GetDouble() / sgemvGbps, root.GetProperty("sgemv_ratio").GetDouble(), tolerance: 0.01);
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("sgemv_core").GetString()));
        Assert.Contains("calls alternating with decode", stdout);
    }

    [Fact]
    public void BenchDecode_SmallShape_LastLineIsJsonWithBytesOfKAndV()
    {
        // 3000 keys: not a multiple of the kernel's 1024-key decode chunk, so a short last chunk is timed too.
        (int code, string stdout, string stderr) = Run("bench", "decode", "--tk", "3000", "--hq", "4", "--hkv", "2", "--d", "64", "--repeat", "2", "--threads", "2");
        Assert.True(code == 0, stderr);
        string last = stdout.TrimEnd().Split('\n')[^1];
        using JsonDocument json = JsonDocument.Parse(last);
        Assert.True(json.RootElement.GetProperty("gbps").GetDouble() > 0);
        Assert.True(json.RootElement.GetProperty("ms").GetDouble() > 0);
        long kAndV = 2L * 3000 * 2 * 64 * 2; // K and V · Tk · Hkv · d · 2 bytes per bf16
        Assert.Equal(kAndV, json.RootElement.GetProperty("bytes").GetInt64());
        // The plain read of the same K and V, the machine's roof for these pages.
        Assert.True(json.RootElement.GetProperty("read_gbps").GetDouble() > 0);
        Assert.Equal(kAndV / (json.RootElement.GetProperty("read_ms").GetDouble() / 1000) / 1e9, json.RootElement.GetProperty("read_gbps").GetDouble(), tolerance: 0.01 * json.RootElement.GetProperty("read_gbps").GetDouble());
        Assert.Contains("read GB/s: the same K and V arrays streamed by 2 thread(s) with no arithmetic", stdout);
        Assert.Equal(3000, json.RootElement.GetProperty("live_keys").GetInt64());
        Assert.Equal("bf16", json.RootElement.GetProperty("dtype").GetString());
        Assert.Equal(2, json.RootElement.GetProperty("threads").GetInt32());
        Assert.Contains(json.RootElement.GetProperty("vector_bits").GetInt32(), new[] { 0, 128, 256, 512 });
    }

    [Fact]
    public void BenchControl_LocalCluster_LastLineIsJsonWithBothFormats()
    {
        (int code, string stdout, string stderr) = Run("bench", "control", "--local-cluster", "1", "--requests", "3");
        Assert.True(code == 0, stderr);
        Assert.Contains("bench control: 3 requests of each kind and format through the SDK on a local cluster of 1 silos", stdout);
        using JsonDocument json = JsonDocument.Parse(stdout.TrimEnd().Split('\n')[^1]);
        JsonElement asJson = json.RootElement.GetProperty("json");
        JsonElement asMessagePack = json.RootElement.GetProperty("msgpack");
        // The bench's SequenceSpec and ChunkRequest(4096) bodies: camelCase JSON, and MessagePack maps of the same members
        // (the spec's autoChunkTokens, 0, adds 20 bytes of JSON and 17 of MessagePack to the 121 and 91 before it).
        Assert.Equal(
            [("create", 141L, 108L), ("describe", 0, 0), ("begin_chunk", 32, 22), ("list", 0, 0)],
            new[] { "create", "describe", "begin_chunk", "list" }.Select(k => (k, asJson.GetProperty(k).GetProperty("request_bytes").GetInt64(), asMessagePack.GetProperty(k).GetProperty("request_bytes").GetInt64())));
        foreach (string kind in new[] { "create", "describe", "begin_chunk", "list" })
        {
            Assert.Equal("application/json", asJson.GetProperty(kind).GetProperty("answer_type").GetString());
            Assert.Equal("application/x-msgpack", asMessagePack.GetProperty(kind).GetProperty("answer_type").GetString());
            Assert.True(asMessagePack.GetProperty(kind).GetProperty("answer_bytes").GetInt64() < asJson.GetProperty(kind).GetProperty("answer_bytes").GetInt64(), kind);
            Assert.True(asMessagePack.GetProperty(kind).GetProperty("p50_ms").GetDouble() > 0, kind);
        }
    }

    [Fact]
    public void Demo_Process_LocalClusterPrefillAndDecodeVerifiedExitsZero()
    {
        (int code, string stdout, string stderr) = RunProcess("demo", "--silos", "3", "--tokens", "700", "--layers", "2", "--hq", "4", "--hkv", "2", "--d", "64", "--decode", "3");
        Assert.True(code == 0, stdout + stderr);
        Assert.Contains("demo: 3 silos in this process", stdout);
        Assert.Equal(2, stdout.Split('\n').Count(l => l.Contains("single-node kernel", StringComparison.Ordinal) && l.TrimEnd().EndsWith(": OK", StringComparison.Ordinal)));
        Assert.Contains("decode: 3 tokens x 2 layers", stdout);
        Assert.Contains("sequence 'demo': Ready, 703 tokens", stdout);
        Assert.EndsWith("demo: OK", stdout.TrimEnd());
    }

    [Theory]
    [InlineData("zigzag", "causal")]
    [InlineData("ulysses", "document")]
    public void Attend_LocalCluster_SameNumbersAsSingleNode(string layout, string mask)
    {
        string stdout = AttendAgainstSingleNode(mask, "--layout", layout, "--shards", "2", "--local-cluster", "2");
        Assert.Contains($"on a local cluster of 2 silos (2 shards, layout {layout})", stdout);
    }

    [Fact]
    public void Attend_EndpointWithoutToken_Exit2()
    {
        string input = WriteInput(new()
        {
            ["q"] = HostTensor.From<float>(Random(1, 80), 5, 4, 4),
            ["k"] = HostTensor.From<float>(Random(2, 20), 5, 1, 4),
            ["v"] = HostTensor.From<float>(Random(3, 20), 5, 1, 4),
        });
        string? saved = Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN");
        Environment.SetEnvironmentVariable("LONGCLUSTER_TOKEN", null);
        try
        {
            (int code, _, string stderr) = Run("attend", "--input", input, "--output", Path.Combine(_directory, "o.safetensors"), "--endpoint", "http://127.0.0.1:1");
            Assert.Equal(2, code);
            Assert.Contains("--endpoint needs the cluster's API token", stderr);
        }
        finally
        {
            Environment.SetEnvironmentVariable("LONGCLUSTER_TOKEN", saved);
        }
    }

    [Fact]
    public void LocalCluster_InProcess_StartsReadySilosAndStops()
    {
        (int code, string stdout, string stderr) = Run("local-cluster", "--silos", "3", "--for", "0");
        Assert.True(code == 0, stderr);
        Assert.Equal(3, stdout.Split('\n').Count(l => l.StartsWith("silo ", StringComparison.Ordinal)));
        Assert.Contains("3 silos in this process, development clustering; all ready", stdout);
    }

    [Fact]
    public void LocalCluster_Processes_RedisAndSiloProcessesStartAndLeaveCleanly()
    {
        (int code, string stdout, string stderr) = Run("local-cluster", "--silos", "2", "--processes", "--for", "0");
        Assert.True(code == 0, stdout + stderr);
        Assert.Equal(2, stdout.Split('\n').Count(l => l.StartsWith("silo process ", StringComparison.Ordinal)));
        Assert.Contains("stopped: exit codes 0, 0", stdout);
    }

    [Fact]
    public async Task LocalCluster_InProcess_SigTerm_StopsLikeCtrlC()
    {
        using var cli = StreamingProcess.Start("local-cluster", "--silos", "2");
        await cli.WaitForLineAsync(l => l.Contains("all ready", StringComparison.Ordinal), TimeSpan.FromMinutes(1));
        cli.Signal("TERM");
        Assert.Equal(0, await cli.ExitCodeAsync(TimeSpan.FromMinutes(1)));
        Assert.Contains(cli.Lines, l => l.Contains("stopping: every silo leaves the cluster", StringComparison.Ordinal));
    }

    [Fact]
    public async Task LocalCluster_Processes_SigTerm_LeavesNoProcessBehind()
    {
        using var cli = StreamingProcess.Start("local-cluster", "--silos", "2", "--processes");
        await cli.WaitForLineAsync(l => l.Contains("all ready", StringComparison.Ordinal), TimeSpan.FromMinutes(2));
        int[] children = [.. cli.Lines.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"\(pid (\d+)\)")).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];
        Assert.Equal(3, children.Length); // two silos and the redis-server
        Assert.All(children, pid => Assert.True(IsRunning(pid), $"pid {pid} should be running"));
        cli.Signal("TERM");
        Assert.Equal(0, await cli.ExitCodeAsync(TimeSpan.FromMinutes(2)));
        Assert.Contains(cli.Lines, l => l.Contains("stopped: exit codes 0, 0", StringComparison.Ordinal));
        Assert.All(children, pid => Assert.False(IsRunning(pid), $"pid {pid} outlived local-cluster"));
    }

    [Fact]
    public async Task Demo_SigTerm_StopsTheClusterAndExits()
    {
        using var cli = StreamingProcess.Start("demo", "--tokens", "65536", "--layers", "8", "--silos", "2");
        await cli.WaitForLineAsync(l => l.Contains("cluster up", StringComparison.Ordinal), TimeSpan.FromMinutes(1));
        cli.Signal("TERM");
        Assert.Equal(1, await cli.ExitCodeAsync(TimeSpan.FromMinutes(1)));
        Assert.Contains(cli.Lines, l => l.Contains("demo: stopped by a signal", StringComparison.Ordinal));
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using Process process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    [Fact]
    public void Attend_Process_BadUsageExitsTwo()
    {
        (int code, _, string stderr) = RunProcess("attend", "--input");
        Assert.Equal(2, code);
        Assert.Contains("--input needs a value", stderr);
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Runs the real longcluster executable (built beside the tests) as a child process.</summary>
    private static (int Code, string Stdout, string Stderr) RunProcess(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "longcluster.dll"));
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"longcluster {string.Join(' ', args)} did not finish in 2 minutes");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    private string WriteInput(Dictionary<string, HostTensor> tensors)
    {
        string path = Path.Combine(_directory, Guid.NewGuid().ToString("N") + ".safetensors");
        SafetensorsWriter.Write(path, tensors);
        return path;
    }

    private static float[] Random(int seed, long count)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, (int)count).Select(_ => (random.NextSingle() * 2) - 1).ToArray();
    }
}

/// <summary>The real longcluster executable as a child process whose output lines can be awaited.</summary>
internal sealed class StreamingProcess : IDisposable
{
    private readonly Process _process;
    private readonly OutputLines _output = new();

    private StreamingProcess(Process process) => _process = process;

    public IReadOnlyList<string> Lines => _output.Lines;

    public static StreamingProcess Start(params string[] args)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "longcluster.dll"));
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        var cli = new StreamingProcess(new Process { StartInfo = start });
        cli._process.OutputDataReceived += (_, e) => cli._output.Add(e.Data);
        cli._process.ErrorDataReceived += (_, e) => cli._output.Add(e.Data);
        cli._process.Start();
        cli._process.BeginOutputReadLine();
        cli._process.BeginErrorReadLine();
        return cli;
    }

    public Task WaitForLineAsync(Func<string, bool> match, TimeSpan timeout) => _output.WaitForLineAsync(match, timeout);

    public void Signal(string signal)
    {
        using Process kill = Process.Start("kill", [$"-{signal}", _process.Id.ToString(CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    public async Task<int> ExitCodeAsync(TimeSpan timeout)
    {
        await _process.WaitForExitAsync().WaitAsync(timeout);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }

        _process.Dispose();
    }

}
