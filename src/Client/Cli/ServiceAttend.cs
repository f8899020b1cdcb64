using System.Globalization;
using System.Security.Cryptography;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// <c>attend --endpoint URL</c> / <c>--local-cluster N</c>: the same attention computed by a cluster — a one-layer
/// sequence created, prefilled through the SDK, read back and deleted.
/// </summary>
internal static class ServiceAttend
{
    /// <summary>
    /// Fills <paramref name="output"/> and <paramref name="logSumExp"/>; returns a description of where it ran. The
    /// sequence is prefilled in requests of <paramref name="requests"/> rows (empty: one of all), which the retrieval
    /// mask's chunks follow; documents are sent when <paramref name="useDocuments"/>.
    /// </summary>
    public static string Run(
        CommandLine options, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, string mask, bool useDocuments, string layout, int shards, int[] documents, int[] requests,
        float[] output, float[] logSumExp) =>
        RunAsync(options, q, k, v, shape, mask, useDocuments, layout, shards, documents, requests, output, logSumExp).GetAwaiter().GetResult();

    private static async Task<string> RunAsync(
        CommandLine options, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, string mask, bool useDocuments, string layout, int shards, int[] documents, int[] requests,
        float[] output, float[] logSumExp)
    {
        await using ClusterTarget target = await ClusterTarget.StartAsync(options, "attend").ConfigureAwait(false);
        try
        {
            using var sdk = new LongClusterClient(target.ClientOptions());
            var spec = new SequenceSpec
            {
                Layers = 1, QueryHeads = shape.QueryHeads, KeyValueHeads = shape.KeyValueHeads, HeadDim = shape.HeadDim, DType = q.DType.SafetensorsName().ToLowerInvariant(),
                Layout = layout, Mask = mask, Shards = shards,
                // One chunk of all the tokens: auto plans for exactly that.
                AutoChunkTokens = layout == "auto" ? Math.Min(shape.QueryTokens, SequenceSpec.MaxAutoChunkTokens) : 0,
            };
            string id = $"attend-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}";
            try
            {
                int[] rows = requests.Length > 0 ? requests : [shape.QueryTokens];
                (SequenceInfo info, IReadOnlyList<LayerOutput> layers) = await sdk.CreateAndPrefillAsync(
                    spec, id, rows[0], (_, _) => Rows(q, k, v, 0, rows[0]), useDocuments ? documents : null).ConfigureAwait(false);
                layers[0].Output.CopyTo(output, 0);
                layers[0].LogSumExp.CopyTo(logSumExp, 0);
                int start = rows[0];
                foreach (int count in rows.Skip(1))
                {
                    int first = start;
                    IReadOnlyList<LayerOutput> next = await sdk.PrefillAsync(id, count, (_, _) => Rows(q, k, v, first, count), useDocuments ? documents[first..(first + count)] : null).ConfigureAwait(false);
                    next[0].Output.CopyTo(output, (long)first * shape.QueryHeads * shape.HeadDim);
                    next[0].LogSumExp.CopyTo(logSumExp, (long)first * shape.QueryHeads);
                    start += count;
                }

                string chosen = info.LayoutChosen is null ? "" : string.Create(CultureInfo.InvariantCulture, $", chosen by auto: predicted {info.PredictedLayerMs:F1} ms");
                return $"{target.Where} ({info.Shards} shards, layout {info.Spec.Layout}{chosen})";
            }
            catch (LongClusterException e) when (e.Status is 400 or 409 or 413 or 429)
            {
                throw new InputException($"the cluster refused the request ({e.Code}{(e.Field is null ? "" : $", field {e.Field}")}): {e.Message}");
            }
            finally
            {
                try
                {
                    await sdk.DeleteSequenceAsync(id).ConfigureAwait(false);
                }
                catch (LongClusterException)
                {
                    // Never created, or the cluster is unreachable: nothing of ours to clean up there.
                }
            }
        }
        catch (LongClusterException e)
        {
            throw new IOException($"attend: the cluster failed the request ({e.Code}, status {e.Status}): {e.Message}", e);
        }
    }

    /// <summary>Rows <c>[first, first + count)</c> of q, k and v (all of them without a copy).</summary>
    private static LayerInput Rows(HostTensor q, HostTensor k, HostTensor v, int first, int count) =>
        new(DemoCommand.Rows(q, first, count), DemoCommand.Rows(k, first, count), DemoCommand.Rows(v, first, count));
}
