using MessagePack;
using MessagePack.Resolvers;

namespace LongCluster.Contracts;

/// <summary>
/// The two forms of the API's control messages (<see cref="SequenceSpec"/>, <see cref="ChunkRequest"/>,
/// <see cref="SequenceInfo"/>, <see cref="ChunkPlan"/>, <see cref="LayerRunResult"/>, …): JSON (camelCase, for curl
/// and every error body) and MessagePack, negotiated by <c>Content-Type</c> and <c>Accept</c>. The one place both the
/// SDK and the silos take the MessagePack form from, so the two cannot drift apart.
/// </summary>
/// <remarks>
/// MessagePack maps keyed by the records' property names (<see cref="ContractlessStandardResolver"/>: the contracts
/// carry no MessagePack attributes, and a new member is a new key that older readers skip), enums as integers.
/// <see cref="MessagePackSecurity.UntrustedData"/> on both sides: a silo reads bodies from anyone holding the token,
/// and a client should not trust a network either (bounded depth, collision-resistant hashing).
/// </remarks>
public static class ControlMessages
{
    /// <summary>The MessagePack media type.</summary>
    public const string MessagePackType = "application/x-msgpack";

    /// <summary>The JSON media type.</summary>
    public const string JsonType = "application/json";

    /// <summary>What a client that reads both asks for: MessagePack first, JSON from a silo that speaks only JSON.</summary>
    public const string AcceptEither = MessagePackType + ", " + JsonType + ";q=0.9";

    /// <summary>Serializer options of the MessagePack form.</summary>
    public static MessagePackSerializerOptions Options { get; } =
        ContractlessStandardResolver.Options.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>Whether <paramref name="mediaType"/> (without parameters, any case) is MessagePack.</summary>
    public static bool IsMessagePack(string? mediaType) => string.Equals(mediaType, MessagePackType, StringComparison.OrdinalIgnoreCase);

    public static byte[] ToMessagePack<T>(T value) => MessagePackSerializer.Serialize(value, Options);

    public static byte[] ToMessagePack(Type type, object? value) => MessagePackSerializer.Serialize(type, value, Options);

    /// <exception cref="MessagePackSerializationException">The bytes are not a <typeparamref name="T"/>.</exception>
    public static T FromMessagePack<T>(ReadOnlyMemory<byte> body) => MessagePackSerializer.Deserialize<T>(body, Options);

    /// <exception cref="MessagePackSerializationException">The bytes are not a <paramref name="type"/>.</exception>
    public static object? FromMessagePack(Type type, ReadOnlyMemory<byte> body) => MessagePackSerializer.Deserialize(type, body, Options);
}
