using LongCluster.Kernels.Backends;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Gpu.Tests;

[Collection(IlgpuCollection.Name)]
public sealed class KeepAndCallTests(BackendFixture fixture)
{
    private readonly IlgpuBackend _backend = fixture.Backend;

    [Fact]
    public void Name_OnTheCpuAccelerator_IsIlgpuCpu() => Assert.Equal("ilgpu-cpu", _backend.Name);

    [Fact]
    public void Keep_KeptAndNotKept_SameBits()
    {
        var shape = new AttentionShape(5, 300, 4, 2, 16);
        var inputs = TestData.Make<BFloat16>(shape, TestData.Positions(5, 295), TestData.Positions(300), seed: 1);
        using IKeptKeyValue? kept = _backend.Keep<BFloat16>(inputs.K, inputs.V);
        Assert.NotNull(kept);
        Assert.Equal(shape.KeyValueElements, kept.Elements);
        foreach (bool decode in new[] { false, true })
        {
            var o1 = new float[shape.QueryElements];
            var l1 = new float[shape.LseElements];
            var o2 = new float[shape.QueryElements];
            var l2 = new float[shape.LseElements];
            Run(decode, inputs, shape, o1, l1, null);
            Run(decode, inputs, shape, o2, l2, kept);
            Assert.Equal(o1, o2);
            Assert.Equal(l1, l2);
        }
    }

    [Fact]
    public void Keep_OverBudget_ReturnsNullAndDisposeReturnsTheBytes()
    {
        // 64 KiB size classes: K and V of 10 000 floats take 2 × 64 KiB; a 256 KiB budget holds two such segments.
        using var backend = new IlgpuBackend(IlgpuDevice.Cpu, budgetBytes: 256 << 10);
        float[] kv = TestData.Random(1, 10_000);
        Assert.Equal(256L << 10, backend.BudgetBytes);
        IKeptKeyValue? first = backend.Keep<float>(kv, kv);
        IKeptKeyValue? second = backend.Keep<float>(kv, kv);
        Assert.NotNull(first);
        Assert.NotNull(second);
        Assert.Equal(128L << 10, first.Bytes);
        Assert.Equal(256L << 10, backend.KeptBytes);
        Assert.Null(backend.Keep<float>(kv, kv));

        first.Dispose();
        Assert.Equal(128L << 10, backend.KeptBytes);
        IKeptKeyValue? third = backend.Keep<float>(kv, kv);
        Assert.NotNull(third);
        Assert.Equal(256L << 10, backend.KeptBytes);

        // A larger class needs the freed small buffers released first: 2 × 128 KiB do not fit beside one segment.
        second.Dispose();
        Assert.Null(backend.Keep<float>(new float[20_000], new float[20_000]));
        third.Dispose();
        Assert.Equal(0, backend.KeptBytes);
        IKeptKeyValue? large = backend.Keep<float>(new float[20_000], new float[20_000]);
        Assert.NotNull(large);
        Assert.Equal(256L << 10, backend.KeptBytes);
    }

    [Fact]
    public void Forward_KeptWithWrongElementCount_ThrowsNamingBothCounts()
    {
        var shape = new AttentionShape(2, 10, 1, 1, 4);
        float[] kv = new float[40];
        using IKeptKeyValue? kept = _backend.Keep<float>(new float[44], new float[44]);
        var e = Assert.Throws<ArgumentException>(() => _backend.Forward<float>(new float[8], kv, kv, shape, AttentionMask.Full, default, new float[8], new float[2], kept: kept));
        Assert.Equal("kept", e.ParamName);
        Assert.Contains("kept holds 44 elements of K and of V, expected [Tk, Hkv, d] = [10, 1, 4] = 40", e.Message);
    }

    [Fact]
    public void Forward_KeptOfAnotherDtype_Throws()
    {
        var shape = new AttentionShape(2, 10, 1, 1, 4);
        using IKeptKeyValue? kept = _backend.Keep<Half>(new Half[40], new Half[40]);
        var e = Assert.Throws<ArgumentException>(() => _backend.Forward<float>(new float[8], new float[40], new float[40], shape, AttentionMask.Full, default, new float[8], new float[2], kept: kept));
        Assert.Contains("kept holds Half elements, the call's storage dtype is Single", e.Message);
    }

    public static TheoryData<string> BadCalls() => ["query length", "head dim", "heads", "documents", "positions", "scale", "threads", "dtype"];

    [Theory]
    [MemberData(nameof(BadCalls))]
    public void ForwardAndDecode_BadInput_SameErrorsAsCpu(string what)
    {
        foreach (bool decode in new[] { false, true })
        {
            Exception cpu = Record.Exception(() => BadCall(CpuBackend.Instance, what, decode))!;
            Exception gpu = Record.Exception(() => BadCall(_backend, what, decode))!;
            Assert.NotNull(cpu);
            Assert.NotNull(gpu);
            Assert.Equal(cpu.GetType(), gpu.GetType());
            Assert.Equal(cpu.Message, gpu.Message);
        }
    }

    [Fact]
    public async Task Forward_TwoConcurrentCallers_EachGetsItsOwnResult()
    {
        var shapeA = new AttentionShape(20, 40, 2, 1, 16);
        var shapeB = new AttentionShape(10, 300, 4, 2, 8);
        var a = TestData.Make<float>(shapeA, TestData.Positions(20, 20), TestData.Positions(40), seed: 11);
        var b = TestData.Make<Half>(shapeB, TestData.Positions(10, 290), TestData.Positions(300), seed: 12);
        (float[] O, float[] Lse) RunA()
        {
            var o = new float[shapeA.QueryElements];
            var l = new float[shapeA.LseElements];
            _backend.Forward<float>(a.Q, a.K, a.V, shapeA, AttentionMask.Causal, a.Tokens, o, l);
            return (o, l);
        }

        (float[] O, float[] Lse) RunB()
        {
            var o = new float[shapeB.QueryElements];
            var l = new float[shapeB.LseElements];
            _backend.Decode<Half>(b.Q, b.K, b.V, shapeB, AttentionMask.Parse("document-causal"), b.Tokens, o, l);
            return (o, l);
        }

        var expectedA = RunA();
        var expectedB = RunB();
        using var start = new Barrier(2);
        var tasks = new List<Task<(float[] O, float[] Lse)>>();
        for (int i = 0; i < 4; i++)
        {
            bool first = i % 2 == 0;
            bool synchronized = i < 2;
            tasks.Add(Task.Factory.StartNew(
                () =>
                {
                    if (synchronized)
                    {
                        // The first two callers enter the backend together.
                        start.SignalAndWait();
                    }

                    return first ? RunA() : RunB();
                },
                CancellationToken.None,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default));
        }

        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < 4; i++)
        {
            var expected = i % 2 == 0 ? expectedA : expectedB;
            Assert.Equal(expected.O, results[i].O);
            Assert.Equal(expected.Lse, results[i].Lse);
        }
    }

    [Fact]
    public void Constructor_NegativeBudget_Throws()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new IlgpuBackend(IlgpuDevice.Cpu, budgetBytes: -1));
        Assert.Equal("budgetBytes", e.ParamName);
    }

    private void Run(bool decode, TestData.Inputs<BFloat16> inputs, AttentionShape shape, float[] o, float[] lse, IKeptKeyValue? kept)
    {
        if (decode)
        {
            _backend.Decode<BFloat16>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o, lse, kept: kept);
        }
        else
        {
            _backend.Forward<BFloat16>(inputs.Q, inputs.K, inputs.V, shape, AttentionMask.Causal, inputs.Tokens, o, lse, kept: kept);
        }
    }

    private static void BadCall(IAttentionBackend backend, string what, bool decode)
    {
        var shape = new AttentionShape(2, 3, 2, 1, 4);
        float[] q = new float[16];
        float[] kv = new float[12];
        var o = new float[16];
        var lse = new float[4];
        AttentionMask mask = AttentionMask.Causal;
        AttentionTokens tokens = default;
        AttentionOptions? options = null;
        switch (what)
        {
            case "query length":
                q = new float[15];
                break;
            case "head dim":
                shape = shape with { HeadDim = 0 };
                break;
            case "heads":
                shape = shape with { QueryHeads = 3 };
                break;
            case "documents":
                mask = AttentionMask.Causal.WithDocuments();
                break;
            case "positions":
                tokens = new AttentionTokens(new long[] { 1 }, default);
                break;
            case "scale":
                options = new AttentionOptions { Scale = float.NaN };
                break;
            case "threads":
                options = new AttentionOptions { MaxThreads = -1 };
                break;
            default:
                var ints = new int[16];
                if (decode)
                {
                    backend.Decode<int>(ints, new int[12], new int[12], shape, mask, tokens, o, lse);
                }
                else
                {
                    backend.Forward<int>(ints, new int[12], new int[12], shape, mask, tokens, o, lse);
                }

                return;
        }

        if (decode)
        {
            backend.Decode<float>(q, kv, kv, shape, mask, tokens, o, lse, options);
        }
        else
        {
            backend.Forward<float>(q, kv, kv, shape, mask, tokens, o, lse, options);
        }
    }
}
