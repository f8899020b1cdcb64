using System.Buffers;

namespace LongCluster.Kernels.Tests;

/// <summary>A large buffer returned on one thread is handed to a rent on any other (see <see cref="LargeBuffers{T}"/>).</summary>
public sealed class LargeBuffersTests
{
    private const int Floats = 1 << 22;

    [Fact]
    public void BufferReturnedOnOneThread_IsRentedAgainOnAnother()
    {
        (float[] rented, float[] again) = RentReturnRent(LargeBuffers<float>.Pool);
        LargeBuffers<float>.Pool.Return(again);
        Assert.Same(rented, again);
    }

    [Fact]
    public void SharedPool_KeepsTheBufferInTheReturningThreadsSlot_WhichIsWhyLargeBuffersExists()
    {
        // The behaviour the pool avoids, checked so that a runtime that changes it is noticed.
        (float[] rented, float[] again) = RentReturnRent(ArrayPool<float>.Shared);
        Assert.NotSame(rented, again);
    }

    /// <summary>Rent, return, rent again, each on a thread of its own, as a layer's rent, its return and the next layer's rent run on different pool threads.</summary>
    private static (float[] Rented, float[] Again) RentReturnRent(ArrayPool<float> pool)
    {
        float[] rented = OnNewThread(() => pool.Rent(Floats));
        OnNewThread(() =>
        {
            pool.Return(rented);
            return 0;
        });
        return (rented, OnNewThread(() => pool.Rent(Floats)));
    }

    private static TResult OnNewThread<TResult>(Func<TResult> work)
    {
        TResult result = default!;
        var thread = new Thread(() => result = work());
        thread.Start();
        thread.Join();
        return result;
    }
}
