namespace LongCluster.Client;

/// <summary>How a <see cref="LongClusterClient"/> sends and asks for control messages (tensors are always safetensors).</summary>
public enum ControlFormat
{
    /// <summary>
    /// Offer MessagePack (<c>application/x-msgpack</c>, smaller and quicker to parse) and read each answer by its
    /// <c>Content-Type</c>; a silo that refuses a MessagePack body (415: it speaks only JSON) gets the same request
    /// again as JSON at once, and JSON from then on.
    /// </summary>
    Auto,

    /// <summary>JSON only, as curl would send it.</summary>
    Json,
}
