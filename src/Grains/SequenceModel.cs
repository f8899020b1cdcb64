using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Kernels.Planning;
using LongCluster.Tensors;

namespace LongCluster.Grains;

/// <summary>
/// A validated <see cref="SequenceSpec"/> in the kernels' terms. A retrieval sequence (<see cref="Retrieval"/> set) has
/// <see cref="AttentionMask.Causal"/> as its <see cref="Mask"/> for what is positional (no document ids), one shard, and
/// its evicted blocks in memory grains.
/// </summary>
internal sealed record SequenceModel(SequenceSpec Spec, ContextLayout Layout, AttentionMask Mask, DType DType, RetrievalRule? Retrieval = null)
{
    /// <summary>Checks every field of a spec and names the first that is wrong.</summary>
    public static SequenceModel Of(SequenceSpec spec)
    {
        if (spec is null)
        {
            throw ServiceException.Invalid("spec", "a JSON body with the sequence spec is required");
        }

        if (spec.Layers is < 1 or > SequenceSpec.MaxLayers)
        {
            throw ServiceException.Invalid("layers", $"expected 1..{SequenceSpec.MaxLayers}, got {spec.Layers}");
        }

        if (spec.HeadDim is < 1 or > 1024)
        {
            throw ServiceException.Invalid("headDim", $"expected 1..1024, got {spec.HeadDim}");
        }

        if (spec.KeyValueHeads < 1 || spec.QueryHeads < 1 || spec.QueryHeads % spec.KeyValueHeads != 0 || spec.QueryHeads > 4096)
        {
            throw ServiceException.Invalid("queryHeads", $"expected queryHeads (1..4096) to be a multiple of keyValueHeads ≥ 1, got {spec.QueryHeads} and {spec.KeyValueHeads}");
        }

        if (spec.Shards is < 0 or > 1024)
        {
            throw ServiceException.Invalid("shards", $"expected 0 (one per silo) .. 1024, got {spec.Shards}");
        }

        if (!DTypes.TryParseFloat(spec.DType ?? "", out DType dtype))
        {
            throw ServiceException.Invalid("dtype", $"expected f32, f16 or bf16, got '{spec.DType}'");
        }

        if (spec.AutoChunkTokens is < 0 or > SequenceSpec.MaxAutoChunkTokens)
        {
            throw ServiceException.Invalid("autoChunkTokens", $"expected 0 (the default, {SequenceSpec.DefaultAutoChunkTokens}) .. {SequenceSpec.MaxAutoChunkTokens}, got {spec.AutoChunkTokens}");
        }

        ContextLayout layout;
        try
        {
            layout = ContextLayout.Parse(spec.Layout ?? "");
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            throw ServiceException.Invalid("layout", e.Message);
        }

        if (RetrievalRule.IsRetrieval(spec.Mask))
        {
            RetrievalRule rule;
            try
            {
                rule = RetrievalRule.Parse(spec.Mask!);
            }
            catch (FormatException e)
            {
                throw ServiceException.Invalid("mask", e.Message);
            }

            // Its evicted blocks spread over the silos' memory grains; the init and local rows stay on one shard.
            if (spec.Shards > 1)
            {
                throw ServiceException.Invalid("shards", $"the retrieval mask runs on one shard (its evicted blocks spread over every silo's memory grains): expected 0 or 1, got {spec.Shards}");
            }

            // On one shard every layout is the contiguous one: the shard takes a request's rows in order.
            return new SequenceModel(
                spec with { DType = dtype.SafetensorsName().ToLowerInvariant(), Mask = rule.ToString(), Layout = ContextLayout.Contiguous.ToString() },
                ContextLayout.Contiguous, AttentionMask.Causal, dtype, rule);
        }

        AttentionMask mask;
        try
        {
            mask = AttentionMask.Parse(spec.Mask ?? "");
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            throw ServiceException.Invalid("mask", e.Message);
        }

        return new SequenceModel(spec with { DType = dtype.SafetensorsName().ToLowerInvariant() }, layout, mask, dtype);
    }

    /// <summary>Whether the spec asks the coordinator to choose the layout (<c>layout: auto</c>, any case).</summary>
    public static bool IsAuto(SequenceSpec? spec) => string.Equals(spec?.Layout?.Trim(), "auto", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// This model with the layout the cost model predicts fastest on <paramref name="shards"/> for a chunk of the spec's
    /// <see cref="SequenceSpec.AutoChunkTokens"/> (0: <see cref="SequenceSpec.DefaultAutoChunkTokens"/>), documents of
    /// 4096 tokens for document masks; the spec names the layout and the chunk length planned for.
    /// </summary>
    public (SequenceModel Model, LayoutChoice Choice) ChooseLayout(int shards, HardwareProfile profile)
    {
        int tokens = Spec.AutoChunkTokens > 0 ? Spec.AutoChunkTokens : SequenceSpec.DefaultAutoChunkTokens;
        LayoutChoice choice = LayoutPlanner.Choose(shards, new ChunkShape(tokens, Spec.QueryHeads, Spec.KeyValueHeads, Spec.HeadDim, DType.Size(), Mask), profile);
        return (this with { Layout = choice.Layout, Spec = Spec with { Layout = choice.Layout.ToString(), AutoChunkTokens = tokens } }, choice);
    }

    /// <summary>The layout plan for a chunk of <paramref name="tokens"/> over <paramref name="shards"/>, with head errors reported on the spec's fields.</summary>
    public LayoutPlan Plan(int shards, int tokens)
    {
        try
        {
            return new LayoutPlan(Layout, shards, tokens, Spec.QueryHeads, Spec.KeyValueHeads);
        }
        catch (ArgumentException e)
        {
            throw ServiceException.Invalid("layout", e.Message);
        }
    }

    /// <summary>
    /// Checks one tensor of a request: its dtype is the sequence's, its shape is <c>[rows, heads, d]</c>, its bytes
    /// match, and every value is finite.
    /// </summary>
    public void CheckRows(TensorRows? tensor, string field, int rows, int heads)
    {
        if (tensor is null)
        {
            throw ServiceException.Invalid(field, $"tensor '{field}' is missing; expected {DType.SafetensorsName()}[{rows}, {heads}, {Spec.HeadDim}]");
        }

        string expectedShape = $"[{rows}, {heads}, {Spec.HeadDim}]";
        if (tensor.DType != DType.SafetensorsName())
        {
            throw ServiceException.Invalid(field, $"expected dtype {DType.SafetensorsName()} (the sequence's), got {tensor.DType}");
        }

        if (tensor.Shape is not [long r, long h, long d] || r != rows || h != heads || d != Spec.HeadDim)
        {
            throw ServiceException.Invalid(field, $"expected shape {expectedShape}, got [{string.Join(", ", tensor.Shape ?? [])}]");
        }

        long bytes = (long)rows * heads * Spec.HeadDim * DType.Size();
        if (tensor.Data is null || tensor.Data.Length != bytes)
        {
            throw ServiceException.Invalid(field, $"expected {bytes} bytes for shape {expectedShape}, got {tensor.Data?.Length ?? 0}");
        }

        long bad = DType.FirstNonFinite(tensor.Data);
        if (bad >= 0)
        {
            throw ServiceException.Invalid(field, $"element {bad} (row {bad / ((long)heads * Spec.HeadDim)}) is not finite; every value must be finite");
        }
    }
}
