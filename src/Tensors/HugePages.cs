using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LongCluster.Tensors;

/// <summary>
/// Large arrays on transparent huge pages (2 MiB) where Linux offers them to a process that asks (the
/// <c>madvise</c> setting of <c>/sys/kernel/mm/transparent_hugepage/enabled</c>, the default of Debian and of most
/// distributions). K and V are streamed end to end by decode: on 4 KiB pages every 4 KiB of each stream is a fresh
/// TLB entry and a page boundary where the core's stream prefetchers stop, and on the 2-core VMs decode read
/// 34.0–35.7 GB/s there against 36.6–38.3 on huge pages (bf16 Tk 262144, 2 threads, alternating runs). numpy asks
/// for huge pages for every large array, so the OpenBLAS SGEMV that <c>bench/kernel.sh</c> holds decode against
/// already reads from them.
/// <para>
/// The advice is a hint the kernel may ignore (huge pages <c>never</c>, not built in, memory too fragmented for a
/// 2 MiB page): nothing depends on it being taken. It covers only the 2 MiB-aligned extents inside an array, and only
/// pages not touched yet, which is why arrays are advised before anything is written to them.
/// </para>
/// </summary>
public static partial class HugePages
{
    /// <summary>Arrays smaller than this are left alone: a huge page is 2 MiB, and a small array has few aligned ones.</summary>
    public const long MinBytes = 4L << 20;

    /// <summary>A cache line, the alignment <see cref="AllocateAligned"/> gives.</summary>
    public const int LineBytes = 64;

    private const long PageBytes = 2L << 20;

    private const int AdviseHugePage = 14; // MADV_HUGEPAGE, linux/mman.h

    /// <summary>
    /// A new array of <paramref name="length"/> elements whose contents are <em>not</em> cleared: the caller writes
    /// every element. At <see cref="MinBytes"/> and above it is pinned (so the advised addresses stay its own) and
    /// advised onto huge pages before its first write; below, an ordinary array.
    /// </summary>
    public static T[] Allocate<T>(int length)
        where T : unmanaged
    {
        if ((long)length * Unsafe.SizeOf<T>() < MinBytes)
        {
            return GC.AllocateUninitializedArray<T>(length);
        }

        T[] array = GC.AllocateUninitializedArray<T>(length, pinned: true);
        Advise(array);
        return array;
    }

    /// <summary>
    /// A new buffer of <paramref name="length"/> bytes, <em>not</em> cleared, that starts on a cache line
    /// (<see cref="LineBytes"/>) when it is <see cref="MinBytes"/> or more: a pinned array from <see cref="Allocate{T}"/>
    /// one line longer, sliced where its first whole line begins (pinned, so the start stays where it was measured).
    /// Smaller buffers are whole ordinary arrays, wherever the GC puts them. A managed array's elements start 16 bytes
    /// after its object, which the GC places on 8 bytes, so a large tensor's rows would otherwise straddle lines: the
    /// decode kernel's 32-byte loads of bf16 K and V rows split in two at every other load, and with K and V in L3 it
    /// read 68–69 GB/s against 73–76 on lined-up copies of the same data (2 threads, alternating).
    /// </summary>
    public static Memory<byte> AllocateAligned(int length)
    {
        if (length < MinBytes)
        {
            return GC.AllocateUninitializedArray<byte>(length);
        }

        byte[] array = Allocate<byte>(checked(length + LineBytes));
        return array.AsMemory(LineSkip(array, 0), length);
    }

    /// <summary>
    /// How many bytes into <paramref name="array"/> something must start for its byte <paramref name="offset"/> to fall on
    /// a cache line (0 to 63), measured now: an array the GC moves later keeps its bytes, not the alignment.
    /// </summary>
    public static unsafe int LineSkip(byte[] array, int offset)
    {
        fixed (byte* pointer = array)
        {
            return (int)((LineBytes - (((long)pointer + offset) & (LineBytes - 1))) & (LineBytes - 1));
        }
    }

    /// <summary>
    /// Asks for huge pages under <paramref name="array"/> (at <see cref="MinBytes"/> and above, on Linux). Pages already
    /// touched stay as they are until the kernel's background collapse reaches them. An array the GC later moves keeps
    /// working; only the advice stays behind at its old address.
    /// </summary>
    public static unsafe void Advise<T>(T[] array)
        where T : unmanaged
    {
        long bytes = (long)array.Length * Unsafe.SizeOf<T>();
        if (bytes < MinBytes || !OperatingSystem.IsLinux())
        {
            return;
        }

        fixed (T* pointer = array)
        {
            long start = ((long)pointer + PageBytes - 1) & ~(PageBytes - 1);
            long end = ((long)pointer + bytes) & ~(PageBytes - 1);

            // A refusal (EINVAL where huge pages are not built in) only means 4 KiB pages, as without the call.
            _ = Madvise((nint)start, (nuint)(end - start), AdviseHugePage);
        }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
