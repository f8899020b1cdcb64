namespace LongCluster.Runtime.Transport;

/// <summary>Consumes a large frame's payload as it arrives; whatever it leaves unread is skipped afterwards.</summary>
public delegate ValueTask StreamHandler(Stream payload, long length, CancellationToken cancellationToken);

/// <summary>Who may talk to a silo, and the limits on what they may send.</summary>
public sealed class TransportOptions
{
    /// <summary>Frames up to this size are accepted; a header announcing more closes the connection.</summary>
    public const int DefaultMaxFrameBytes = 256 * 1024 * 1024;

    /// <summary>Silos of one cluster share this id; a peer with another id is refused.</summary>
    public string ClusterId { get; set; } = "longcluster";

    /// <summary>Shared cluster secret (at least 16 bytes); proven with HMAC-SHA256, never sent.</summary>
    public byte[] Secret { get; set; } = [];

    /// <summary>Largest frame read into memory whole; larger one-way frames need a <see cref="StreamHandler"/>.</summary>
    public int MaxFrameBytes { get; set; } = DefaultMaxFrameBytes;

    /// <summary>
    /// Receives large one-way frames as a stream read straight off the connection, so a payload of any size (up to
    /// <see cref="MaxStreamedFrameBytes"/>) never sits whole in memory. Null: every frame is buffered.
    /// </summary>
    public StreamHandler? StreamHandler { get; set; }

    /// <summary>
    /// Receives <see cref="FrameKind.Message"/> frames as a stream read straight off the connection (bulk tensors go
    /// from the socket into their destination buffer). Null: a message frame closes the connection.
    /// </summary>
    public StreamHandler? MessageHandler { get; set; }

    /// <summary>One-way frames at least this large go to <see cref="StreamHandler"/> when it is set.</summary>
    public int StreamThresholdBytes { get; set; } = 4 * 1024 * 1024;

    /// <summary>Upper bound of a streamed frame.</summary>
    public long MaxStreamedFrameBytes { get; set; } = 64L * 1024 * 1024 * 1024;

    /// <summary>A peer that has not completed the handshake in this time is disconnected.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Deadline of a request whose caller sets none.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(ClusterId))
        {
            throw new ArgumentException("ClusterId is empty", nameof(ClusterId));
        }

        if (Secret is null || Secret.Length < 16)
        {
            throw new ArgumentException("the cluster Secret must be at least 16 bytes", nameof(Secret));
        }

        if (MaxFrameBytes < 1024)
        {
            throw new ArgumentException($"MaxFrameBytes must be >= 1024, got {MaxFrameBytes}", nameof(MaxFrameBytes));
        }
    }
}
