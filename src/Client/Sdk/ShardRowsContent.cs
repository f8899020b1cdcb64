using System.Buffers;
using System.Net;
using System.Net.Http.Headers;
using LongCluster.Contracts;
using LongCluster.Tensors;

namespace LongCluster.Client;

/// <summary>
/// One shard's upload body, safetensors <c>q</c>, <c>k</c>, <c>v</c>: the shard's rows, in its order, written from the
/// caller's token-order tensors while the request is sent. A layer's upload is hundreds of MB, and building each
/// shard's body first would copy all of it twice (rows out, then into one array). Short runs of rows (a striped
/// layout's) are gathered into one buffer before they are written, long ones are written as they lie.
/// </summary>
internal sealed class ShardRowsContent : HttpContent
{
    private const int GatherBytes = 1 << 20;

    private readonly ShardRows _shard;
    private readonly HostTensor[] _tensors;
    private readonly byte[] _preamble;

    public ShardRowsContent(ShardRows shard, LayerInput input)
    {
        _shard = shard;
        _tensors = [input.Query, input.Key, input.Value];
        _preamble = SafetensorsWriter.Preamble(
            [.. new[] { "q", "k", "v" }.Zip(_tensors, (name, t) => new SafetensorsLayout(name, t.DType, [shard.Rows, t.Shape[1], t.Shape[2]]))]);
        Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
    }

    /// <summary>Bytes of one token's row of <paramref name="tensor"/> (<c>[T, H, d]</c>).</summary>
    internal static int RowBytes(HostTensor tensor) => (int)(tensor.Shape[1] * tensor.Shape[2]) * tensor.DType.Size();

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        await stream.WriteAsync(_preamble, cancellationToken).ConfigureAwait(false);
        byte[] gather = ArrayPool<byte>.Shared.Rent(GatherBytes);
        try
        {
            int gathered = 0;
            foreach (HostTensor tensor in _tensors)
            {
                int row = RowBytes(tensor);
                int[] runs = _shard.Runs;
                for (int run = 0; run < runs.Length; run += 2)
                {
                    ReadOnlyMemory<byte> rows = tensor.Data.Slice(runs[run] * row, runs[run + 1] * row);
                    if (gathered + rows.Length > gather.Length && gathered > 0)
                    {
                        await stream.WriteAsync(gather.AsMemory(0, gathered), cancellationToken).ConfigureAwait(false);
                        gathered = 0;
                    }

                    if (rows.Length >= gather.Length)
                    {
                        await stream.WriteAsync(rows, cancellationToken).ConfigureAwait(false);
                    }
                    else
                    {
                        rows.Span.CopyTo(gather.AsSpan(gathered));
                        gathered += rows.Length;
                    }
                }
            }

            await stream.WriteAsync(gather.AsMemory(0, gathered), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(gather);
        }
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override bool TryComputeLength(out long length)
    {
        length = _preamble.Length + _tensors.Sum(t => (long)_shard.Rows * RowBytes(t));
        return true;
    }
}
