using System.Numerics;
using System.Runtime.InteropServices;

namespace LongCluster.Tensors;

/// <summary>Element types LongCluster stores and moves. Compute is always f32 whatever the storage type.</summary>
public enum DType
{
    F32,
    F16,
    BF16,
    I32,
    I64,
}

/// <summary>Sizes and the safetensors spellings of <see cref="DType"/>.</summary>
public static class DTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        DType.I64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>The dtype string of the safetensors header ("F32", "F16", "BF16", "I32", "I64").</summary>
    public static string SafetensorsName(this DType dtype) => dtype switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.I32 => "I32",
        DType.I64 => "I64",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>Parses a safetensors dtype string; false for types LongCluster does not handle.</summary>
    public static bool TryParseSafetensors(string name, out DType dtype)
    {
        switch (name)
        {
            case "F32": dtype = DType.F32; return true;
            case "F16": dtype = DType.F16; return true;
            case "BF16": dtype = DType.BF16; return true;
            case "I32": dtype = DType.I32; return true;
            case "I64": dtype = DType.I64; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>Parses the user-facing spelling ("f32", "f16", "bf16").</summary>
    public static bool TryParseFloat(string name, out DType dtype)
    {
        switch (name.ToLowerInvariant())
        {
            case "f32" or "float32" or "float": dtype = DType.F32; return true;
            case "f16" or "float16" or "half": dtype = DType.F16; return true;
            case "bf16" or "bfloat16": dtype = DType.BF16; return true;
            default: dtype = default; return false;
        }
    }

    /// <summary>The CLR element type that stores <paramref name="dtype"/>.</summary>
    public static Type ClrType(this DType dtype) => dtype switch
    {
        DType.F32 => typeof(float),
        DType.F16 => typeof(Half),
        DType.BF16 => typeof(BFloat16),
        DType.I32 => typeof(int),
        DType.I64 => typeof(long),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>
    /// Index of the first NaN or infinite element of <paramref name="data"/> stored as <paramref name="dtype"/>, or −1
    /// (integer dtypes are always finite). Shared by every place that refuses non-finite input.
    /// </summary>
    public static long FirstNonFinite(this DType dtype, ReadOnlySpan<byte> data) => dtype switch
    {
        // NaN or infinity: the exponent's bits all ones, whatever the sign and mantissa.
        DType.F32 => FirstNonFinite(MemoryMarshal.Cast<byte, uint>(data), 0x7F80_0000u, 0x7FFF_FFFFu, 0x8000_0000u),
        DType.F16 => FirstNonFinite(MemoryMarshal.Cast<byte, ushort>(data), (ushort)0x7C00, (ushort)0x7FFF, (ushort)0x8000),
        DType.BF16 => FirstNonFinite(MemoryMarshal.Cast<byte, ushort>(data), (ushort)0x7F80, (ushort)0x7FFF, (ushort)0x8000),
        _ => -1,
    };

    /// <summary>
    /// Index of the first value whose bits lie in [<paramref name="low"/>, <paramref name="high"/>] with or without
    /// the <paramref name="sign"/> bit, or −1: two vectorized range searches (a shard's upload is hundreds of MB), the
    /// second only over what precedes the first's find.
    /// </summary>
    private static int FirstNonFinite<T>(ReadOnlySpan<T> bits, T low, T high, T sign)
        where T : unmanaged, IBinaryInteger<T>
    {
        int positive = bits.IndexOfAnyInRange(low, high);
        int negative = bits[..(positive < 0 ? bits.Length : positive)].IndexOfAnyInRange(low | sign, high | sign);
        return negative >= 0 ? negative : positive;
    }
}
