using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels;

/// <summary>Software prefetch of strided rows into the cache hierarchy (a no-op where the ISA has none).</summary>
internal static unsafe class Prefetch
{
    private const int LineBytes = 64;

    /// <summary>Asks for every cache line of <paramref name="rows"/> rows of <paramref name="count"/> elements, <paramref name="stride"/> elements apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Rows<T>(T* source, long stride, int rows, int count)
        where T : unmanaged
    {
        if (!Sse.IsSupported)
        {
            return;
        }

        int bytes = count * sizeof(T);
        for (int r = 0; r < rows; r++)
        {
            byte* row = (byte*)(source + (r * stride));
            for (int offset = 0; offset < bytes; offset += LineBytes)
            {
                Sse.Prefetch0(row + offset);
            }
        }
    }
}
