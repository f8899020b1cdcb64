using System.Diagnostics;
using System.Globalization;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary><c>longcluster attend</c>: attention over tensors from a safetensors file, on this node.</summary>
internal static class AttendCommand
{
    /// <summary>
    /// Default mask. Attention without a mask is the mathematical definition (and the default of PyTorch's
    /// scaled_dot_product_attention); causal must be asked for.
    /// </summary>
    private const string DefaultMask = "full";

    private static readonly DType[] FloatTypes = [DType.F32, DType.F16, DType.BF16];

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        CommandLine options = CommandLine.Parse(
            "attend", args, ["input", "output", "mask", "scale", "threads", "shards", "layout", "endpoint", "token", "local-cluster", "backend", "requests"], []);
        string input = options.RequiredText("input");
        string output = options.RequiredText("output");
        RetrievalRule? retrieval = options.Retrieval();
        int[] requests = RequestRows(options, retrieval);

        // The retrieval rule is no positional mask; `mask` stands in only where documents are asked about (never).
        AttentionMask mask = retrieval is null ? options.Mask(DefaultMask) : default;
        string maskName = retrieval?.ToString() ?? mask.ToString();
        IAttentionBackend backend = options.Backend();
        var kernelOptions = new AttentionOptions
        {
            Scale = options.Float("scale"),
            MaxThreads = options.Int("threads", 0, 1),
        };

        int shards = options.Int("shards", 1, 1, 4096);
        // "auto": the cluster's coordinator chooses; in process, the cost model with this machine's profile does.
        string? layoutText = options.Has("shards") || options.Has("layout") ? options.LayoutOrAuto("zigzag") : null;

        using SafetensorsReader reader = SafetensorsReader.Open(input);
        HostTensor q = reader.Read("q", 3, FloatTypes);
        HostTensor k = reader.Read("k", 3, FloatTypes);
        HostTensor v = reader.Read("v", 3, FloatTypes);
        AttentionShape shape = ShapeOf(q, k, v);
        long[] qPositions = ReadPositions(reader, "q_positions", shape.QueryTokens);
        long[] kPositions = ReadPositions(reader, "k_positions", shape.KeyTokens);
        int[] qDocuments = [];
        int[] kDocuments = [];
        if (reader.Contains("doc_ids"))
        {
            int[] documents = reader.Read("doc_ids", 1, DType.I32).AsSpan<int>().ToArray();
            qDocuments = DocumentsAt(documents, qPositions, shape.QueryTokens, "q");
            kDocuments = DocumentsAt(documents, kPositions, shape.KeyTokens, "k");
            if (!mask.Document)
            {
                stderr.WriteLine($"warning: doc_ids is present but mask '{maskName}' does not use documents; use document or document-causal to apply it");
            }
        }
        else if (mask.Document)
        {
            throw new InputException($"mask '{mask}' needs a 'doc_ids' tensor [N] (i32, one document id per position) in {input}");
        }

        TensorChecks.RequireFinite("q", q);
        TensorChecks.RequireFinite("k", k);
        TensorChecks.RequireFinite("v", v);

        ContextLayout? layout = null;
        var o = new float[shape.QueryElements];
        var lse = new float[shape.LseElements];
        var tokens = new AttentionTokens(qPositions, kPositions, qDocuments, kDocuments);
        long started = Stopwatch.GetTimestamp();
        string where = "";
        if (retrieval is not null)
        {
            if (shape.QueryTokens != shape.KeyTokens || !IsIdentity(qPositions, shape.QueryTokens) || !IsIdentity(kPositions, shape.KeyTokens))
            {
                throw new InputException("the retrieval mask runs over a whole sequence: q and k must be the same tokens at positions 0..T-1");
            }

            if (requests.Length > 0 && requests.Sum(r => (long)r) != shape.QueryTokens)
            {
                throw new InputException($"--requests adds up to {requests.Sum(r => (long)r)} rows, not the {shape.QueryTokens} tokens of q");
            }
        }

        if (options.Has("endpoint") || options.Has("local-cluster"))
        {
            if (options.Has("scale") || options.Has("threads") || options.Has("backend"))
            {
                throw new UsageException(
                    "attend: --scale, --threads and --backend apply to this node's kernel; the service uses 1/sqrt(d), its silos' cores and their Service:KernelBackend");
            }

            if (shape.QueryTokens != shape.KeyTokens || !IsIdentity(qPositions, shape.QueryTokens) || !IsIdentity(kPositions, shape.KeyTokens))
            {
                throw new InputException("--endpoint and --local-cluster prefill a sequence: q and k must be the same tokens at positions 0..T-1");
            }

            if (q.DType != k.DType || k.DType != v.DType)
            {
                throw new InputException($"q, k and v must share one dtype to be stored in a sequence, got {q.DType.SafetensorsName()}, {k.DType.SafetensorsName()}, {v.DType.SafetensorsName()}");
            }

            where = ServiceAttend.Run(
                options, q, k, v, shape, maskName, retrieval is null && mask.Document, layoutText ?? "zigzag", options.Has("shards") ? shards : 0, qDocuments, requests, o, lse);
        }
        else if (retrieval is { } rule)
        {
            TensorChecks.Retrieval(q, k, v, shape, rule, requests, o, lse, kernelOptions);
        }
        else if (layoutText is null)
        {
            TensorChecks.Forward(backend, q, k, v, shape, mask, tokens, o, lse, kernelOptions);
        }
        else
        {
            if (shape.QueryTokens != shape.KeyTokens || !qPositions.AsSpan().SequenceEqual(kPositions))
            {
                throw new InputException("--shards runs a context-parallel prefill: q and k must cover the same tokens (Tq == Tk, same positions)");
            }

            layout = layoutText == "auto"
                ? LayoutPlanner.Choose(shards, new ChunkShape(shape.QueryTokens, shape.QueryHeads, shape.KeyValueHeads, shape.HeadDim, q.DType.Size(), mask), HardwareProfile.Load("this-machine")).Layout
                : ContextLayout.Parse(layoutText);
            _ = PlanCommand.CreatePlan("attend", layout, shards, shape.QueryTokens, shape.QueryHeads, shape.KeyValueHeads);
            TensorChecks.ShardedForward(backend, q, k, v, shape, mask, layout, shards, qPositions, qDocuments, o, lse, kernelOptions);
        }

        double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;

        SafetensorsWriter.Write(
            output,
            [
                new("o", HostTensor.From<float>(o, shape.QueryTokens, shape.QueryHeads, shape.HeadDim)),
                new("lse", HostTensor.From<float>(lse, shape.QueryTokens, shape.QueryHeads)),
            ],
            new Dictionary<string, string> { ["mask"] = maskName });

        stdout.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"attend: Tq={shape.QueryTokens} Tk={shape.KeyTokens} Hq={shape.QueryHeads} Hkv={shape.KeyValueHeads} d={shape.HeadDim} {q.DType.SafetensorsName()} mask={maskName}{(requests.Length > 1 ? $" requests={requests.Length}" : "")}{(layout is null || where.Length > 0 ? "" : $" shards={shards} layout={layout}")}{where} in {seconds * 1000:F1} ms -> {output}"));
        return CliApp.ExitOk;
    }

    /// <summary>
    /// <c>--requests 100,1,1</c>: the rows of each request that built the sequence, for the retrieval mask (its chunks
    /// restart at every request). The retrieval mask runs on this node's CPU kernels, or on a cluster's single shard
    /// and memory grains (<c>--endpoint</c>, <c>--local-cluster</c>), one request each.
    /// </summary>
    private static int[] RequestRows(CommandLine options, RetrievalRule? retrieval)
    {
        if (retrieval is null)
        {
            return options.Has("requests")
                ? throw new UsageException("attend: --requests applies to the retrieval mask only (its chunks restart at every request)")
                : [];
        }

        string? sharded = new[] { "shards", "layout" }.FirstOrDefault(options.Has);
        if (sharded is not null)
        {
            throw new UsageException(
                $"attend: --{sharded}: the retrieval mask runs on one shard (on this node, or on a cluster with --endpoint or --local-cluster, its evicted blocks in the silos' memory grains), not over context-parallel shards");
        }

        if (options.Has("backend") && options.Text("backend") != "cpu")
        {
            throw new UsageException("attend: --backend: the retrieval mask runs on the CPU kernels only (--backend cpu)");
        }

        return options.Has("requests") ? options.IntList("requests", 1, int.MaxValue) : [];
    }

    /// <summary>Whether the positions are 0..count−1 (none given means so).</summary>
    private static bool IsIdentity(long[] positions, int count) =>
        positions.Length == 0 || positions.SequenceEqual(Enumerable.Range(0, count).Select(i => (long)i));

    private static AttentionShape ShapeOf(HostTensor q, HostTensor k, HostTensor v)
    {
        if (!k.Shape.SequenceEqual(v.Shape))
        {
            throw new InputException($"k has shape [{string.Join(", ", k.Shape)}] but v has [{string.Join(", ", v.Shape)}]; they must match [Tk, Hkv, d]");
        }

        if (q.Shape[2] != k.Shape[2])
        {
            throw new InputException($"q has head dim {q.Shape[2]} but k has {k.Shape[2]}; q is [Tq, Hq, d] and k, v are [Tk, Hkv, d] with the same d");
        }

        long hq = q.Shape[1];
        long hkv = k.Shape[1];
        if (hq < 1 || hkv < 1 || hq % hkv != 0)
        {
            throw new InputException($"q has {hq} heads and k has {hkv}: the query heads must be a positive multiple of the KV heads");
        }

        long d = q.Shape[2];
        if (d < 1 || d > AttentionShape.MaxHeadDim)
        {
            throw new InputException($"head dim d = {d} is outside 1..{AttentionShape.MaxHeadDim}");
        }

        if (q.ElementCount() > int.MaxValue || k.ElementCount() > int.MaxValue)
        {
            throw new InputException($"q [{string.Join(", ", q.Shape)}] or k is over {int.MaxValue} elements; split it into chunks");
        }

        return new AttentionShape((int)q.Shape[0], (int)k.Shape[0], (int)hq, (int)hkv, (int)d);
    }

    private static long[] ReadPositions(SafetensorsReader reader, string name, int count)
    {
        if (!reader.Contains(name))
        {
            return [];
        }

        HostTensor tensor = reader.Read(name, 1, DType.I64, DType.I32);
        long[] positions = tensor.DType == DType.I64
            ? tensor.AsSpan<long>().ToArray()
            : tensor.AsSpan<int>().ToArray().Select(x => (long)x).ToArray();
        if (positions.Length != count)
        {
            throw new InputException($"{name} has {positions.Length} entries, expected {count} (one per row)");
        }

        int negative = Array.FindIndex(positions, p => p < 0);
        if (negative >= 0)
        {
            throw new InputException($"{name}[{negative}] = {positions[negative]}; positions must be >= 0");
        }

        return positions;
    }

    /// <summary>doc_ids is indexed by global position; each row takes the id of its position (default positions 0..T−1).</summary>
    private static int[] DocumentsAt(int[] documents, long[] positions, int count, string rows)
    {
        var result = new int[count];
        for (int i = 0; i < count; i++)
        {
            long position = positions.Length == 0 ? i : positions[i];
            if (position >= documents.Length)
            {
                throw new InputException($"{rows} row {i} is at position {position}, but doc_ids has only {documents.Length} entries (one per position)");
            }

            result[i] = documents[position];
        }

        return result;
    }
}
