using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels;

/// <summary>Software prefetch into the cache hierarchy (a no-op where the ISA has none).</summary>
internal static unsafe class Prefetch
{
    private const int LineBytes = 64;

    /// <summary>Asks for every cache line of one row of <paramref name="count"/> elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Row<T>(T* source, int count)
        where T : unmanaged
    {
        if (!Sse.IsSupported)
        {
            return;
        }

        byte* row = (byte*)source;
        int bytes = count * sizeof(T);
        for (int offset = 0; offset < bytes; offset += LineBytes)
        {
            Sse.Prefetch0(row + offset);
        }
    }
}
