using System.Buffers.Binary;

namespace LongCluster.Runtime.Transport;

/// <summary>What a frame is.</summary>
public enum FrameKind : byte
{
    Hello = 1,
    Challenge = 2,
    Proof = 3,
    Request = 4,
    Response = 5,
    OneWay = 6,
    Failure = 7,

    /// <summary>A one-way binary message for the silo's message handler (bulk tensors between grains), always streamed.</summary>
    Message = 8,
}

/// <summary>
/// The fixed 24-byte header before every payload: magic "LCF1", kind, three reserved zero bytes, a correlation id
/// (8 bytes) and the payload length (8 bytes), little-endian. Anything that does not parse closes the connection.
/// </summary>
public readonly record struct FrameHeader(FrameKind Kind, ulong Correlation, long PayloadLength)
{
    public const int Size = 24;

    private const uint Magic = 0x3146434C; // "LCF1"

    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, Magic);
        destination[4] = (byte)Kind;
        destination[5] = destination[6] = destination[7] = 0;
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], Correlation);
        BinaryPrimitives.WriteInt64LittleEndian(destination[16..], PayloadLength);
    }

    /// <summary>Parses and checks a header; the error says what is wrong (for the log line of the closed connection).</summary>
    public static FrameHeader Read(ReadOnlySpan<byte> source, long maxPayload)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != Magic)
        {
            throw new InvalidDataException("bad frame magic");
        }

        var kind = (FrameKind)source[4];
        if (kind is < FrameKind.Hello or > FrameKind.Message || source[5] != 0 || source[6] != 0 || source[7] != 0)
        {
            throw new InvalidDataException($"bad frame kind {source[4]} or reserved bytes");
        }

        long length = BinaryPrimitives.ReadInt64LittleEndian(source[16..]);
        if (length < 0 || length > maxPayload)
        {
            throw new InvalidDataException($"frame payload of {length} bytes is outside 0..{maxPayload}");
        }

        return new FrameHeader(kind, BinaryPrimitives.ReadUInt64LittleEndian(source[8..]), length);
    }
}
