using LongCluster.Kernels.ContextParallel;
using Orleans.Serialization.Buffers;
using Orleans.Serialization.Cloning;
using Orleans.Serialization.Codecs;
using Orleans.Serialization.WireProtocol;

namespace LongCluster.Grains.Exchange;

/// <summary>Orleans' wire form of a <see cref="RingBlock"/>: length-prefixed raw frame bytes, like a byte array's.</summary>
[RegisterSerializer]
internal sealed class RingBlockCodec : IFieldCodec<RingBlock>
{
    public void WriteField<TBufferWriter>(ref Writer<TBufferWriter> writer, uint fieldIdDelta, Type? expectedType, RingBlock? value)
        where TBufferWriter : System.Buffers.IBufferWriter<byte>
    {
        if (ReferenceCodec.TryWriteReferenceField(ref writer, fieldIdDelta, expectedType, value) || value is null)
        {
            return;
        }

        writer.WriteFieldHeader(fieldIdDelta, expectedType, typeof(RingBlock), WireType.LengthPrefixed);
        ReadOnlySpan<byte> bytes = value.Frame.Bytes;
        writer.WriteVarUInt32((uint)bytes.Length);
        writer.Write(bytes);
    }

    public RingBlock ReadValue<TInput>(ref Reader<TInput> reader, Field field)
    {
        if (field.WireType == WireType.Reference)
        {
            return ReferenceCodec.ReadReference<RingBlock, TInput>(ref reader, field)
                ?? throw new InvalidDataException("a ring block cannot be null");
        }

        field.EnsureWireType(WireType.LengthPrefixed);
        uint length = reader.ReadVarUInt32();
        if (length > int.MaxValue)
        {
            throw new InvalidDataException($"a ring block of {length} bytes cannot be received");
        }

        byte[] buffer = Frame.RentBuffer((int)length);
        try
        {
            reader.ReadBytes(buffer.AsSpan(0, (int)length));
        }
        catch
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }

        var block = new RingBlock(Frame.Adopt(buffer, (int)length));
        ReferenceCodec.RecordObject(reader.Session, block);
        return block;
    }
}

/// <summary>Within one silo a block is not copied: the receiver gets its own reference to the same frame.</summary>
[RegisterCopier]
internal sealed class RingBlockCopier : IDeepCopier<RingBlock>
{
    public RingBlock? DeepCopy(RingBlock? input, CopyContext context) => input is null ? null : new(input.Frame.Retain());
}
