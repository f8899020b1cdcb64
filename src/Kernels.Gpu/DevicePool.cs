using ILGPU;
using ILGPU.Runtime;

namespace LongCluster.Kernels.Gpu;

/// <summary>
/// The one pool of device buffers for kept KV segments. Sizes are rounded up to a power of two (at least 64 KiB), so
/// a freed buffer serves the next segment of its size class without a device allocation. Every byte the pool holds,
/// in use or free, counts against the budget; when a new buffer would not fit, free buffers of other classes are
/// released first, and only then is the request refused. Not thread-safe: the backend calls it under its lock.
/// </summary>
internal sealed class DevicePool : IDisposable
{
    private const long MinimumClass = 64 << 10;

    private readonly Accelerator _accelerator;
    private readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> _free = [];
    private long _heldBytes;

    public DevicePool(Accelerator accelerator, long budgetBytes)
    {
        _accelerator = accelerator;
        BudgetBytes = budgetBytes;
    }

    public long BudgetBytes { get; }

    /// <summary>Bytes of buffers handed out and not yet returned.</summary>
    public long InUseBytes { get; private set; }

    public static long SizeClass(long bytes) => Math.Max(MinimumClass, (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)Math.Max(1, bytes)));

    /// <summary>A buffer of at least <paramref name="bytes"/>, or null when the budget has no room for it.</summary>
    public MemoryBuffer1D<byte, Stride1D.Dense>? Rent(long bytes)
    {
        long size = SizeClass(bytes);
        if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
        {
            InUseBytes += size;
            return stack.Pop();
        }

        if (_heldBytes + size > BudgetBytes)
        {
            ReleaseFree();
        }

        if (_heldBytes + size > BudgetBytes)
        {
            return null;
        }

        var buffer = _accelerator.Allocate1D<byte>(size);
        _heldBytes += size;
        InUseBytes += size;
        return buffer;
    }

    public void Return(MemoryBuffer1D<byte, Stride1D.Dense> buffer)
    {
        long size = buffer.Length;
        InUseBytes -= size;
        if (!_free.TryGetValue(size, out var stack))
        {
            stack = new Stack<MemoryBuffer1D<byte, Stride1D.Dense>>();
            _free[size] = stack;
        }

        stack.Push(buffer);
    }

    private void ReleaseFree()
    {
        foreach (var stack in _free.Values)
        {
            while (stack.Count > 0)
            {
                var buffer = stack.Pop();
                _heldBytes -= buffer.Length;
                buffer.Dispose();
            }
        }
    }

    /// <summary>Frees the free buffers; buffers still rented belong to their handles, which the backend disposes first.</summary>
    public void Dispose() => ReleaseFree();
}
