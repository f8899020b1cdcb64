using static System.FormattableString;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>Checks and dispatch over the storage dtypes of tensors read from files.</summary>
internal static class TensorChecks
{
    /// <summary>Throws naming the first element that is NaN or infinite, with its index in the tensor's shape.</summary>
    public static void RequireFinite(string name, HostTensor tensor)
    {
        long bad = tensor.DType.FirstNonFinite(tensor.Data.Span);
        if (bad < 0)
        {
            return;
        }

        var index = new long[tensor.Shape.Count];
        long rest = bad;
        for (int i = index.Length - 1; i >= 0; i--)
        {
            index[i] = rest % tensor.Shape[i];
            rest /= tensor.Shape[i];
        }

        float value = tensor.ToSingle()[bad];
        throw new InputException($"tensor '{name}' has a non-finite value {value} at [{string.Join(", ", index)}]; inputs must be finite");
    }

    /// <summary>
    /// Runs the forward kernel of <paramref name="backend"/> on tensors of any storage dtype. Q, K and V of one dtype run
    /// in it directly; mixed dtypes are widened to f32 first (exact), since one kernel call has one storage type.
    /// </summary>
    public static void Forward(
        IAttentionBackend backend, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens, float[] o, float[] lse,
        AttentionOptions options) =>
        Dispatch(q, k, v, new BackendCall(backend, decode: false, shape, mask, tokens, o, lse, options));

    /// <summary>
    /// Applies the retrieval rule (<see cref="RetrievalAttention.Forward{T}"/>) to tensors of any storage dtype,
    /// dispatched as <see cref="Forward"/> is.
    /// </summary>
    public static void Retrieval(
        HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, RetrievalRule rule, int[] requests, float[] o, float[] lse, AttentionOptions options) =>
        Dispatch(q, k, v, new RetrievalCall(shape, rule, requests, o, lse, options));

    /// <summary>
    /// Runs the decode kernel (<see cref="Attention.Decode{T}"/>: few query rows, long K/V) on tensors of any storage
    /// dtype, dispatched as <see cref="Forward"/> is.
    /// </summary>
    public static void Decode(
        IAttentionBackend backend, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, scoped AttentionTokens tokens, float[] o, float[] lse,
        AttentionOptions options) =>
        Dispatch(q, k, v, new BackendCall(backend, decode: true, shape, mask, tokens, o, lse, options));

    /// <summary>Runs <paramref name="call"/> on Q, K and V in their storage dtype when they share one, else widened to f32.</summary>
    private static void Dispatch<TCall>(HostTensor q, HostTensor k, HostTensor v, scoped TCall call)
        where TCall : IKernelCall, allows ref struct
    {
        if (q.DType != k.DType || k.DType != v.DType)
        {
            call.Run<float>(q.ToSingle(), k.ToSingle(), v.ToSingle());
            return;
        }

        switch (q.DType)
        {
            case DType.F32:
                call.Run<float>(q.AsSpan<float>(), k.AsSpan<float>(), v.AsSpan<float>());
                break;
            case DType.F16:
                call.Run<Half>(q.AsSpan<Half>(), k.AsSpan<Half>(), v.AsSpan<Half>());
                break;
            case DType.BF16:
                call.Run<BFloat16>(q.AsSpan<BFloat16>(), k.AsSpan<BFloat16>(), v.AsSpan<BFloat16>());
                break;
            default:
                throw new InputException($"q, k and v must be F32, F16 or BF16, not {q.DType.SafetensorsName()}");
        }
    }

    /// <summary>One kernel call, made for the storage dtype of its Q, K and V.</summary>
    private interface IKernelCall
    {
        void Run<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v)
            where T : unmanaged;
    }

    private readonly ref struct BackendCall : IKernelCall
    {
        private readonly IAttentionBackend _backend;
        private readonly bool _decode;
        private readonly AttentionShape _shape;
        private readonly AttentionMask _mask;
        private readonly AttentionTokens _tokens;
        private readonly float[] _o;
        private readonly float[] _lse;
        private readonly AttentionOptions _options;

        public BackendCall(
            IAttentionBackend backend, bool decode, AttentionShape shape, AttentionMask mask, AttentionTokens tokens, float[] o, float[] lse, AttentionOptions options)
        {
            _backend = backend;
            _decode = decode;
            _shape = shape;
            _mask = mask;
            _tokens = tokens;
            _o = o;
            _lse = lse;
            _options = options;
        }

        public void Run<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v)
            where T : unmanaged
        {
            if (_decode)
            {
                _backend.Decode(q, k, v, _shape, _mask, _tokens, _o, _lse, _options);
            }
            else
            {
                _backend.Forward(q, k, v, _shape, _mask, _tokens, _o, _lse, _options);
            }
        }
    }

    private readonly record struct RetrievalCall(AttentionShape Shape, RetrievalRule Rule, int[] Requests, float[] O, float[] Lse, AttentionOptions Options) : IKernelCall
    {
        public void Run<T>(ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v)
            where T : unmanaged =>
            RetrievalAttention.Forward(q, k, v, Shape, Rule, Requests, O, Lse, Options);
    }

    /// <summary>The same computation as <see cref="Forward"/>, by <paramref name="shards"/> in-process ranks under <paramref name="layout"/>.</summary>
    public static void ShardedForward(
        IAttentionBackend backend, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, ContextLayout layout, int shards, long[] positions, int[] documents, float[] o, float[] lse, AttentionOptions options)
    {
        if (q.DType == k.DType && k.DType == v.DType && q.DType is DType.F16)
        {
            Run<Half>(q.AsSpan<Half>().ToArray(), k.AsSpan<Half>().ToArray(), v.AsSpan<Half>().ToArray());
        }
        else if (q.DType == k.DType && k.DType == v.DType && q.DType is DType.BF16)
        {
            Run<BFloat16>(q.AsSpan<BFloat16>().ToArray(), k.AsSpan<BFloat16>().ToArray(), v.AsSpan<BFloat16>().ToArray());
        }
        else
        {
            Run<float>(q.ToSingle(), k.ToSingle(), v.ToSingle());
        }

        void Run<T>(T[] query, T[] key, T[] value)
            where T : unmanaged
        {
            using var sequence = new ShardedSequence<T>(layout, shards, shape.QueryHeads, shape.KeyValueHeads, shape.HeadDim, mask, options) { Backend = backend };
            sequence.PrefillAsync(query, key, value, o, lse, positions, documents).GetAwaiter().GetResult();
        }
    }

    /// <summary>
    /// Synthetic values in [−1, 1), seeded, stored as <paramref name="dtype"/>. A tensor's bytes are one managed
    /// array, so a shape over <see cref="Array.MaxLength"/> bytes is a usage error, said before anything is allocated.
    /// </summary>
    public static HostTensor Synthetic(DType dtype, int seed, params long[] shape)
    {
        double bytes = shape.Aggregate((double)dtype.Size(), (a, b) => a * b);
        if (bytes > Array.MaxLength)
        {
            throw new UsageException(Invariant(
                $"a {dtype.SafetensorsName().ToLowerInvariant()} tensor of shape [{string.Join(", ", shape)}] would take {bytes / 1048576:F0} MiB; one tensor holds at most {Array.MaxLength / 1048576} MiB: use fewer tokens or heads, or a smaller head dim"));
        }

        var random = new Random(seed);
        long count = shape.Aggregate(1L, (a, b) => a * b);
        var values = new float[count];
        for (long i = 0; i < count; i++)
        {
            values[i] = (random.NextSingle() * 2f) - 1f;
        }

        return dtype switch
        {
            DType.F32 => HostTensor.From<float>(values, shape),
            DType.F16 => HostTensor.From<Half>(values.Select(x => (Half)x).ToArray(), shape),
            DType.BF16 => HostTensor.From<BFloat16>(values.Select(x => (BFloat16)x).ToArray(), shape),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a float dtype"),
        };
    }
}
