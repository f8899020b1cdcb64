using System.Security.Cryptography;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Kernels;
using LongCluster.Service;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// <c>attend --endpoint URL</c> / <c>--local-cluster N</c>: the same attention computed by a cluster — a one-layer
/// sequence created, prefilled through the SDK, read back and deleted.
/// </summary>
internal static class ServiceAttend
{
    /// <summary>Fills <paramref name="output"/> and <paramref name="logSumExp"/>; returns a description of where it ran.</summary>
    public static string Run(
        CommandLine options, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, string layout, int shards, int[] documents, float[] output, float[] logSumExp) =>
        RunAsync(options, q, k, v, shape, mask, layout, shards, documents, output, logSumExp).GetAwaiter().GetResult();

    private static async Task<string> RunAsync(
        CommandLine options, HostTensor q, HostTensor k, HostTensor v, AttentionShape shape, AttentionMask mask, string layout, int shards, int[] documents, float[] output, float[] logSumExp)
    {
        LocalAttentionCluster? local = null;
        try
        {
            LongClusterClientOptions client;
            string where;
            if (options.Has("local-cluster"))
            {
                int silos = options.Int("local-cluster", 4, 1, 64);
                local = await LocalAttentionCluster.StartAsync(silos).ConfigureAwait(false);
                client = new LongClusterClientOptions { Endpoints = local.Endpoints, Token = local.ApiToken };
                where = $" on a local cluster of {silos} silos";
            }
            else
            {
                string endpoint = options.RequiredText("endpoint");
                if (!Uri.TryCreate(endpoint, UriKind.Absolute, out Uri? uri) || uri.Scheme is not ("http" or "https"))
                {
                    throw new UsageException($"attend: --endpoint expects an http(s) URL of a silo, got '{endpoint}'");
                }

                string token = options.Text("token") ?? Environment.GetEnvironmentVariable("LONGCLUSTER_TOKEN")
                    ?? throw new UsageException("attend: --endpoint needs the cluster's API token: --token T or LONGCLUSTER_TOKEN");
                client = new LongClusterClientOptions { Endpoints = [uri], Token = token };
                where = $" on {uri.GetLeftPart(UriPartial.Authority)}";
            }

            using var sdk = new LongClusterClient(client);
            var spec = new SequenceSpec
            {
                Layers = 1, QueryHeads = shape.QueryHeads, KeyValueHeads = shape.KeyValueHeads, HeadDim = shape.HeadDim, DType = q.DType.SafetensorsName().ToLowerInvariant(),
                Layout = layout, Mask = mask.ToString(), Shards = shards,
            };
            string id = $"attend-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}";
            try
            {
                (SequenceInfo info, IReadOnlyList<LayerOutput> layers) = await sdk.CreateAndPrefillAsync(
                    spec, id, shape.QueryTokens, (_, _) => new LayerInput(q, k, v), mask.Document ? documents : null).ConfigureAwait(false);
                layers[0].Output.CopyTo(output, 0);
                layers[0].LogSumExp.CopyTo(logSumExp, 0);
                return $"{where} ({info.Shards} shards, layout {layout})";
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
        finally
        {
            if (local is not null)
            {
                await local.DisposeAsync().ConfigureAwait(false);
            }
        }
    }
}
