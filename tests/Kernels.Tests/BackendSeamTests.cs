using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;

namespace LongCluster.Kernels.Tests;

/// <summary>
/// The ranks compute through <see cref="IAttentionBackend"/>: every stored segment is offered to the backend to keep,
/// a block that is a stored segment is computed from the kept copy, a peer's block from its own rows, and a dropped
/// segment's copy is freed.
/// </summary>
public sealed class BackendSeamTests
{
    [Theory]
    [InlineData(int.MaxValue)]
    [InlineData(0)]
    public async Task ShardedPrefill_RecordingBackend_EveryBlockFromAKeptCopy_OrCopiedPerCallWhenNoRoom_SameBitsAsCpu(int room)
    {
        const int T = 96, Hq = 4, Hkv = 2, D = 16, Shards = 3;
        float[] q = TestData.Random(1, (long)T * Hq * D);
        float[] k = TestData.Random(2, (long)T * Hkv * D);
        float[] v = TestData.Random(3, (long)T * Hkv * D);
        var cpuO = new float[q.Length];
        var cpuL = new float[T * Hq];
        using (var cpu = new ShardedSequence<float>(ContextLayout.Parse("zigzag"), Shards, Hq, Hkv, D, AttentionMask.Causal))
        {
            await cpu.PrefillAsync(q, k, v, cpuO, cpuL);
        }

        var backend = new RecordingBackend { Room = room };
        var o = new float[q.Length];
        var l = new float[T * Hq];
        using (var sequence = new ShardedSequence<float>(ContextLayout.Parse("zigzag"), Shards, Hq, Hkv, D, AttentionMask.Causal) { Backend = backend })
        {
            await sequence.PrefillAsync(q, k, v, o, l);
            // Only the stored segments stay kept; a peer's block is kept for its step and freed after it.
            Assert.Equal(room == 0 ? 0 : Shards, backend.Live);
        }

        Assert.Equal(cpuO, o);
        Assert.Equal(cpuL, l);

        // Each rank's first ring step is its own stored segment; the other Shards − 1 steps are peers' blocks, staged as
        // they arrive. Under a causal zigzag every block is visible to some of every rank's rows, so each step computes.
        Assert.Equal(room == 0 ? (0, Shards * Shards) : (Shards * Shards, 0), (backend.KeptCalls, backend.CopiedCalls));
        Assert.Equal(room == 0 ? 0 : Shards * Shards, backend.KeepsMade);
        Assert.Equal(0, backend.Live);
    }

    [Fact]
    public void AttendStored_AppendedSegments_EachReadFromItsOwnKeptCopy_TruncateFreesIt()
    {
        const int Hq = 2, Hkv = 1, D = 8, Rows = 5;
        var backend = new RecordingBackend();
        using var rank = new ContextParallelRank<float>(0, D) { Backend = backend };
        float[] k = TestData.Random(2, Rows * Hkv * D);
        float[] v = TestData.Random(3, Rows * Hkv * D);
        int undo = 0;
        for (int t = 0; t < Rows; t++)
        {
            undo = rank.Append([t], [], k[(t * D)..((t + 1) * D)], v[(t * D)..((t + 1) * D)]);
        }

        Assert.Equal(Rows, backend.Live);
        float[] q = TestData.Random(1, Hq * D);
        var o = new float[Hq * D];
        var lse = new float[Hq];
        Assert.True(rank.AttendStored(q, [Rows - 1], [], Hq, Hkv, AttentionMask.Causal, AttentionOptions.Default, o, lse));
        Assert.Equal((Rows, 0), (backend.KeptCalls, backend.CopiedCalls));

        var shape = new AttentionShape(1, Rows, Hq, Hkv, D);
        (double[] refO, double[] refLse) = AttentionReference.Forward<float>(q, k, v, shape, AttentionMask.Causal, new AttentionTokens([Rows - 1], TestData.Positions(Rows)));
        TestData.AssertClose(o, lse, refO, refLse, 1e-5, "appended rows through kept copies");

        rank.Truncate(undo);
        Assert.Equal(Rows - 1, backend.Live);
    }

    /// <summary>
    /// Keeps its own copy of every segment and computes from that copy when handed the handle — so a rank that passed
    /// the wrong handle for a block would get a wrong answer — and counts calls with and without one.
    /// </summary>
    private sealed class RecordingBackend : IAttentionBackend
    {
        private int _live;
        private int _keepsMade;
        private int _keptCalls;
        private int _copiedCalls;

        public string Name => "recording";

        public long KeptBytes => 0;

        /// <summary>Copies that may live at once; past it <see cref="Keep{T}"/> returns null, as a full device does.</summary>
        public int Room { get; init; } = int.MaxValue;

        public int Live => Volatile.Read(ref _live);

        public int KeepsMade => Volatile.Read(ref _keepsMade);

        public int KeptCalls => Volatile.Read(ref _keptCalls);

        public int CopiedCalls => Volatile.Read(ref _copiedCalls);

        public IKeptKeyValue? Keep<T>(ReadOnlySpan<T> key, ReadOnlySpan<T> value)
            where T : unmanaged
        {
            if (Interlocked.Increment(ref _live) > Room)
            {
                Interlocked.Decrement(ref _live);
                return null;
            }

            Interlocked.Increment(ref _keepsMade);
            return new Copy<T>(key.ToArray(), value.ToArray(), this);
        }

        public void Forward<T>(
            ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
            Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
            where T : unmanaged
        {
            Copy<T>? copy = Source<T>(kept);
            Attention.Forward(query, copy is null ? key : copy.Key, copy is null ? value : copy.Value, shape, mask, tokens, output, logSumExp, options);
        }

        public void Decode<T>(
            ReadOnlySpan<T> query, ReadOnlySpan<T> key, ReadOnlySpan<T> value, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens,
            Span<float> output, Span<float> logSumExp, AttentionOptions? options = null, IKeptKeyValue? kept = null)
            where T : unmanaged
        {
            Copy<T>? copy = Source<T>(kept);
            Attention.Decode(query, copy is null ? key : copy.Key, copy is null ? value : copy.Value, shape, mask, tokens, output, logSumExp, options);
        }

        public void MergePartials(
            ReadOnlySpan<float> output1, ReadOnlySpan<float> logSumExp1, ReadOnlySpan<float> output2, ReadOnlySpan<float> logSumExp2,
            Span<float> output, Span<float> logSumExp, int headDim) =>
            Attention.MergePartials(output1, logSumExp1, output2, logSumExp2, output, logSumExp, headDim);

        /// <summary>The kept copy to compute from, or null to use the call's own K and V.</summary>
        private Copy<T>? Source<T>(IKeptKeyValue? kept)
            where T : unmanaged
        {
            if (kept is null)
            {
                Interlocked.Increment(ref _copiedCalls);
                return null;
            }

            var copy = (Copy<T>)kept;
            Assert.False(copy.Disposed);
            Interlocked.Increment(ref _keptCalls);
            return copy;
        }

        private sealed class Copy<T>(T[] key, T[] value, RecordingBackend owner) : IKeptKeyValue
        {
            public T[] Key => key;

            public T[] Value => value;

            public bool Disposed { get; private set; }

            public int Elements => key.Length;

            public long Bytes => 0;

            public void Dispose()
            {
                Assert.False(Disposed);
                Disposed = true;
                Interlocked.Decrement(ref owner._live);
            }
        }
    }
}
