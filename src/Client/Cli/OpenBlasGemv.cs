using System.Buffers;
using System.Runtime.InteropServices;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// OpenBLAS's SGEMV, loaded into this process from a shared library the caller names: y = A · x over an f32
/// <c>[rows, 4096]</c> A of about a given size, row-major, as <c>bench/gemv.py</c> runs it through numpy. A GEMV reads
/// each element of A once, so its time gives the read bandwidth a streaming kernel can reach; run in the same process
/// as the decode kernel, in alternating calls, the two see the same stretches of a shared machine's memory. The core
/// type and thread count are OpenBLAS's own (<c>OPENBLAS_CORETYPE</c> when it loads; <see cref="Threads"/> here).
/// <para>
/// After a call OpenBLAS's worker threads spin for new work for 2^28 cycles by default (<c>OPENBLAS_THREAD_TIMEOUT</c>,
/// 28), a tenth of a second, on the very cores the next decode call needs: decode then read 0.58–0.77 of SGEMV where
/// with the timeout at its minimum, 4 (the workers sleep at once and wake in microseconds for the next 20–30 ms call),
/// it read 0.82–0.94 (bf16 Tk 262144, 2 threads, 7 alternating calls per run). So <see cref="Load"/> sets the minimum
/// unless the environment already sets a timeout.
/// </para>
/// </summary>
internal sealed unsafe partial class OpenBlasGemv : IDisposable
{
    public const int Columns = 4096;

    private const int RowMajor = 101; // CBLAS_ORDER
    private const int NoTranspose = 111; // CBLAS_TRANSPOSE

    private readonly delegate* unmanaged<int, int, int, int, float, float*, int, float*, int, float, float*, int, void> _sgemv;
    private readonly MemoryHandle _pin;
    private readonly float* _a;
    private readonly float[] _x = new float[Columns];
    private readonly float[] _y;

    private OpenBlasGemv(nint library, string path, int rows, int threads)
    {
        _sgemv = (delegate* unmanaged<int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)Export(library, path, "cblas_sgemv");
        var setThreads = (delegate* unmanaged<int, void>)Export(library, path, "openblas_set_num_threads");
        var coreName = (delegate* unmanaged<byte*>)Export(library, path, "openblas_get_corename");
        setThreads(threads);
        Threads = threads;
        Core = Marshal.PtrToStringUTF8((nint)coreName()) ?? "?";

        Rows = rows;
        Memory<byte> matrix = HugePages.AllocateAligned(Rows * Columns * sizeof(float));
        _pin = matrix.Pin();
        _a = (float*)_pin.Pointer;
        for (long i = 0; i < (long)Rows * Columns; i++)
        {
            _a[i] = (i % 13) * 0.0625f;
        }

        for (int i = 0; i < Columns; i++)
        {
            _x[i] = 1f - (i % 7 * 0.25f);
        }

        _y = new float[Rows];
    }

    /// <summary>The core type OpenBLAS chose or was told to use (<c>openblas_get_corename</c>).</summary>
    public string Core { get; }

    public int Rows { get; }

    public int Threads { get; }

    /// <summary>A, row-major.</summary>
    public ReadOnlySpan<float> Matrix => new(_a, Rows * Columns);

    public ReadOnlySpan<float> Input => _x;

    /// <summary>y of the last <see cref="Run"/>.</summary>
    public ReadOnlySpan<float> Output => _y;

    /// <summary>Bytes of A, what one <see cref="Run"/> reads.</summary>
    public long Bytes => (long)Rows * Columns * sizeof(float);

    /// <summary>Loads <paramref name="path"/> (an OpenBLAS build) and allocates an A of about <paramref name="bytes"/> bytes (whole rows, the nearest count).</summary>
    public static OpenBlasGemv Load(string path, long bytes, int threads)
    {
        long rows = Math.Max(1, (long)Math.Round(bytes / (4.0 * Columns)));
        if (rows * Columns * sizeof(float) > Array.MaxLength - HugePages.LineBytes)
        {
            throw new UsageException($"--sgemv: an SGEMV matrix of {rows * Columns * sizeof(float)} bytes is more than one array holds ({Array.MaxLength - HugePages.LineBytes})");
        }

        if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("OPENBLAS_THREAD_TIMEOUT") is null)
        {
            // The native environment, which OpenBLAS reads as it loads; .NET's own setter does not reach it on Linux.
            _ = SetEnvironment("OPENBLAS_THREAD_TIMEOUT", "4", overwrite: 0);
        }

        if (!NativeLibrary.TryLoad(path, out nint library))
        {
            throw new UsageException($"--sgemv: cannot load '{path}' as a shared library (an OpenBLAS build such as /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0)");
        }

        return new OpenBlasGemv(library, path, (int)rows, threads);
    }

    /// <summary>y = A · x, once.</summary>
    public void Run()
    {
        fixed (float* x = _x, y = _y)
        {
            _sgemv(RowMajor, NoTranspose, Rows, Columns, 1f, _a, Columns, x, 1, 0f, y, 1);
        }
    }

    /// <summary>Unpins A. The library stays loaded for the life of the process: OpenBLAS's worker threads run its code.</summary>
    public void Dispose() => _pin.Dispose();

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnvironment(string name, string value, int overwrite);

    private static nint Export(nint library, string path, string name) =>
        NativeLibrary.TryGetExport(library, name, out nint address)
            ? address
            : throw new UsageException($"--sgemv: '{path}' has no {name}: it is not an OpenBLAS build");
}
