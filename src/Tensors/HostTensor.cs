using System.Runtime.InteropServices;

namespace LongCluster.Tensors;

/// <summary>
/// A dense, row-major, little-endian tensor in managed memory: a dtype, a shape and the raw bytes. The tensor owns
/// its bytes; typed views are reinterpretations of them, not copies. Tensors this library allocates (<see cref="From{T}"/>,
/// the safetensors readers) start on a cache line when large (<see cref="HugePages.AllocateAligned"/>).
/// </summary>
public sealed class HostTensor
{
    public HostTensor(DType dtype, IReadOnlyList<long> shape, byte[] data)
        : this(dtype, shape, (data ?? throw new ArgumentNullException(nameof(data))).AsMemory())
    {
    }

    /// <summary>A tensor over <paramref name="data"/>, which it takes as its own (no copy).</summary>
    public HostTensor(DType dtype, IReadOnlyList<long> shape, Memory<byte> data)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long count = ElementCount(shape);
        long expected = checked(count * dtype.Size());
        if (data.Length != expected)
        {
            throw new ArgumentException(
                $"a {dtype.SafetensorsName()} tensor of shape [{string.Join(", ", shape)}] needs {expected} bytes, got {data.Length}",
                nameof(data));
        }

        DType = dtype;
        Shape = shape.ToArray();
        Data = data;
    }

    public DType DType { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public IReadOnlyList<long> Shape { get; }

    /// <summary>The raw little-endian element bytes.</summary>
    public Memory<byte> Data { get; }

    /// <summary>The bytes as one array of exactly their length: the tensor's own when it holds a whole array, else a copy.</summary>
    public byte[] DataArray() =>
        MemoryMarshal.TryGetArray<byte>(Data, out ArraySegment<byte> segment) && segment.Offset == 0 && segment.Count == segment.Array!.Length
            ? segment.Array
            : Data.ToArray();

    public long ElementCount() => ElementCount(Shape);

    /// <summary>Builds a tensor that copies <paramref name="values"/>.</summary>
    public static HostTensor From<T>(ReadOnlySpan<T> values, params long[] shape)
        where T : unmanaged
    {
        DType dtype = DTypeOf<T>();
        ReadOnlySpan<byte> source = MemoryMarshal.AsBytes(values);
        Memory<byte> bytes = HugePages.AllocateAligned(source.Length);
        source.CopyTo(bytes.Span);
        return new HostTensor(dtype, shape, bytes);
    }

    /// <summary>A typed view of the data; throws if <typeparamref name="T"/> is not this tensor's element type.</summary>
    public Span<T> AsSpan<T>()
        where T : unmanaged
    {
        if (DType.ClrType() != typeof(T))
        {
            throw new InvalidOperationException($"tensor holds {DType.SafetensorsName()}, not {typeof(T).Name}");
        }

        return MemoryMarshal.Cast<byte, T>(Data.Span);
    }

    /// <summary>Widens any floating tensor to f32 (a copy).</summary>
    public float[] ToSingle()
    {
        var result = new float[ElementCount()];
        switch (DType)
        {
            case DType.F32:
                AsSpan<float>().CopyTo(result);
                break;
            case DType.F16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(AsSpan<Half>(), result);
                break;
            case DType.BF16:
                Span<BFloat16> source = AsSpan<BFloat16>();
                for (int i = 0; i < source.Length; i++)
                {
                    result[i] = (float)source[i];
                }

                break;
            default:
                throw new InvalidOperationException($"tensor holds {DType.SafetensorsName()}, not a floating type");
        }

        return result;
    }

    public static DType DTypeOf<T>()
        where T : unmanaged
    {
        if (typeof(T) == typeof(float))
        {
            return DType.F32;
        }

        if (typeof(T) == typeof(Half))
        {
            return DType.F16;
        }

        if (typeof(T) == typeof(BFloat16))
        {
            return DType.BF16;
        }

        if (typeof(T) == typeof(int))
        {
            return DType.I32;
        }

        if (typeof(T) == typeof(long))
        {
            return DType.I64;
        }

        throw new NotSupportedException($"{typeof(T).Name} is not a LongCluster element type");
    }

    internal static long ElementCount(IReadOnlyList<long> shape)
    {
        long count = 1;
        for (int i = 0; i < shape.Count; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException($"dimension {i} is negative ({shape[i]})", nameof(shape));
            }

            count = checked(count * shape[i]);
        }

        return count;
    }

    public override string ToString() => $"{DType.SafetensorsName()}[{string.Join(", ", Shape)}]";
}
