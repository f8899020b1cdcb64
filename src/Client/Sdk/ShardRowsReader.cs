using System.Buffers;
using System.Runtime.InteropServices;
using LongCluster.Contracts;
using LongCluster.Tensors;

namespace LongCluster.Client;

/// <summary>
/// Reads a shard's f32 rows (in its order) from a body into their token positions in a chunk-wide array, through a
/// buffer of about a MiB that stays in cache: the chunk-wide array is the only place the rows are written in memory.
/// </summary>
internal static class ShardRowsReader
{
    private const int BufferBytes = 1 << 20;

    public static async Task ReadAsync(SafetensorsStreamReader reader, SafetensorsEntry entry, ShardRows shard, float[] chunk, int rowFloats, CancellationToken cancellationToken)
    {
        int rowBytes = rowFloats * sizeof(float);
        int rowsPerRead = Math.Max(1, BufferBytes / rowBytes);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(rowsPerRead * rowBytes);
        try
        {
            long offset = entry.Begin;
            int[] runs = shard.Runs;
            for (int run = 0; run < runs.Length; run += 2)
            {
                int token = runs[run];
                for (int left = runs[run + 1]; left > 0;)
                {
                    int rows = Math.Min(left, rowsPerRead);
                    int bytes = rows * rowBytes;
                    await reader.ReadAsync(offset, buffer.AsMemory(0, bytes), cancellationToken).ConfigureAwait(false);
                    buffer.AsSpan(0, bytes).CopyTo(MemoryMarshal.AsBytes(chunk.AsSpan(token * rowFloats, rows * rowFloats)));
                    offset += bytes;
                    token += rows;
                    left -= rows;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
