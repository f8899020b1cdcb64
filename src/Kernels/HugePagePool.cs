using System.Buffers;
using LongCluster.Tensors;

namespace LongCluster.Kernels;

/// <summary>
/// A pool whose large buffers are advised onto huge pages (<see cref="HugePages"/>) as they are rented. The inner pool
/// allocates with <c>new T[]</c>, whose fresh pages the GC has not touched, so the advice given on the first rent
/// reaches them before their first write; on a buffer the pool hands out again it repeats a hint already given, one
/// system call per rent of at least <see cref="HugePages.MinBytes"/> (a few a layer).
/// </summary>
internal sealed class HugePagePool<T>(ArrayPool<T> inner) : ArrayPool<T>
    where T : unmanaged
{
    public override T[] Rent(int minimumLength)
    {
        T[] array = inner.Rent(minimumLength);
        HugePages.Advise(array);
        return array;
    }

    public override void Return(T[] array, bool clearArray = false) => inner.Return(array, clearArray);
}
