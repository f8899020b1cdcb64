using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace LongCluster.Kernels;

/// <summary>
/// Software prefetch as a walk through a region of rows (<c>rowBytes</c> each, <c>strideBytes</c> apart) that asks
/// for a few cache lines of it at a time, so a kernel spreads its requests for data it will need soon evenly over the
/// work it does meanwhile rather than asking in bursts that stall on the miss buffers. Without SSE (no prefetch
/// instruction) the walk is empty.
/// </summary>
internal unsafe struct PrefetchWalk
{
    public const int LineBytes = 64;

    private readonly int _rowBytes;
    private readonly long _strideBytes;
    private byte* _row;
    private int _offset;
    private int _rows;

    public PrefetchWalk(void* start, int rows, int rowBytes, long strideBytes)
    {
        _row = (byte*)start;
        _rows = start == null || !Sse.IsSupported || rows <= 0 ? 0 : rows;
        _rowBytes = rowBytes;
        _strideBytes = strideBytes;
        _offset = 0;
        if (_rows > 1 && rowBytes == strideBytes && (long)rows * rowBytes <= int.MaxValue)
        {
            // Rows that touch are one run: the walk then never has to step from row to row.
            _rowBytes = rows * rowBytes;
            _strideBytes = _rowBytes;
            _rows = 1;
        }
    }

    /// <summary>Asks for <paramref name="lines"/> cache lines from <paramref name="at"/> on; returns where the next ask starts.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte* Ask(byte* at, int lines)
    {
        for (int l = 0; l < lines; l++)
        {
            Sse.Prefetch0(at);
            at += LineBytes;
        }

        return at;
    }

    /// <summary>Where the walk starts when it is one contiguous run not yet begun (its <see cref="Lines"/> from there on); otherwise null.</summary>
    public readonly byte* Run => _rows == 1 && _offset == 0 ? _row : null;

    /// <summary>Cache lines the walk has left to ask for.</summary>
    public readonly int Lines => _rows == 0 ? 0 : (_rows * ((_rowBytes + LineBytes - 1) / LineBytes)) - (_offset / LineBytes);

    /// <summary>Asks for the next <paramref name="lines"/> cache lines (fewer at the end of the region).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Next(int lines)
    {
        for (int n = 0; n < lines && _rows > 0; n++)
        {
            Sse.Prefetch0(_row + _offset);
            _offset += LineBytes;
            if (_offset >= _rowBytes)
            {
                _offset = 0;
                _row += _strideBytes;
                _rows--;
            }
        }
    }
}
