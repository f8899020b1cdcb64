using System.Net;
using System.Net.Sockets;
using System.Text;
using LongCluster.Runtime.Transport;

namespace LongCluster.Runtime.Tests;

public sealed class TransportTests : IAsyncLifetime
{
    private static readonly byte[] Secret = Encoding.UTF8.GetBytes("a cluster secret of some length");

    private readonly TransportOptions _options = new()
    {
        ClusterId = "test-cluster",
        Secret = Secret,
        HandshakeTimeout = TimeSpan.FromSeconds(10),
        RequestTimeout = TimeSpan.FromSeconds(10),
        MaxFrameBytes = 32 * 1024 * 1024,
    };

    private TransportServer _server = null!;

    public async Task InitializeAsync() => _server = await TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), _options, Handle, default);

    public async Task DisposeAsync() => await _server.DisposeAsync();

    [Fact]
    public async Task Request_ManyConcurrent_EachGetsItsOwnAnswer()
    {
        await using PeerConnection client = await ConnectAsync(_options);
        byte[][] answers = await Task.WhenAll(Enumerable.Range(0, 500).Select(i => client.RequestAsync(Encoding.UTF8.GetBytes("echo " + i))));
        Assert.Equal(Enumerable.Range(0, 500).Select(i => "echo " + i), answers.Select(a => Encoding.UTF8.GetString(a)));
    }

    [Fact]
    public async Task Request_16MiBPayload_ArrivesIntact()
    {
        await using PeerConnection client = await ConnectAsync(_options);
        byte[] payload = new byte[16 * 1024 * 1024];
        new Random(5).NextBytes(payload);
        payload[0] = (byte)'e';
        byte[] answer = await client.RequestAsync(payload);
        Assert.Equal(payload, answer);
    }

    [Fact]
    public async Task StreamedFrame_TenTimesTheBufferedLimit_ArrivesInChunksIntactAndConnectionStaysUsable()
    {
        var digest = new TaskCompletionSource<(byte[] Hash, long Bytes, int Reads)>(TaskCreationOptions.RunContinuationsAsynchronously);
        TransportOptions options = StreamingOptions(async (stream, length, ct) =>
        {
            using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
            var buffer = new byte[256 * 1024];
            long total = 0;
            int reads = 0;
            int n;
            while ((n = await stream.ReadAsync(buffer, ct)) > 0)
            {
                hash.AppendData(buffer, 0, n);
                total += n;
                reads++;
            }

            digest.SetResult((hash.GetHashAndReset(), total, reads));
        });
        await using TransportServer server = await TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), options, Handle, default);
        await using PeerConnection client = await PeerConnection.ConnectAsync("127.0.0.1", server.Port, options, null, default);

        byte[] payload = new byte[(40 * 1024 * 1024) + 123];
        new Random(9).NextBytes(payload);
        await client.SendStreamAsync(new MemoryStream(payload), payload.Length);

        (byte[] hashOfReceived, long bytes, int chunks) = await digest.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(payload), hashOfReceived);
        Assert.Equal(payload.Length, bytes);
        Assert.True(chunks > 1, $"{chunks} reads");
        Assert.Equal("echo after", Encoding.UTF8.GetString(await client.RequestAsync(Encoding.UTF8.GetBytes("echo after"))));
    }

    [Fact]
    public async Task StreamedFrame_HandlerReadsOnlyPart_RestIsSkippedAndNextFrameLinesUp()
    {
        TransportOptions options = StreamingOptions(async (stream, length, ct) => await stream.ReadExactlyAsync(new byte[100], ct));
        await using TransportServer server = await TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), options, Handle, default);
        await using PeerConnection client = await PeerConnection.ConnectAsync("127.0.0.1", server.Port, options, null, default);
        await client.SendStreamAsync(new MemoryStream(new byte[3 * 1024 * 1024]), 3 * 1024 * 1024);
        Assert.Equal("echo next", Encoding.UTF8.GetString(await client.RequestAsync(Encoding.UTF8.GetBytes("echo next"))));
    }

    [Fact]
    public async Task SendStream_SourceShorterThanPromised_FailsAndClosesConnection()
    {
        TransportOptions options = StreamingOptions((_, _, _) => ValueTask.CompletedTask);
        await using TransportServer server = await TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), options, Handle, default);
        PeerConnection client = await PeerConnection.ConnectAsync("127.0.0.1", server.Port, options, null, default);
        EndOfStreamException error = await Assert.ThrowsAsync<EndOfStreamException>(() => client.SendStreamAsync(new MemoryStream(new byte[1000]), 5000));
        Assert.Contains("after 1000 of 5000 bytes", error.Message);
        await client.Completion.WaitAsync(TimeSpan.FromSeconds(10));
    }

    private static TransportOptions StreamingOptions(StreamHandler handler) => new()
    {
        ClusterId = "test-cluster",
        Secret = Secret,
        MaxFrameBytes = 4 * 1024 * 1024,
        StreamThresholdBytes = 1024 * 1024,
        StreamHandler = handler,
    };

    [Fact]
    public async Task Request_HandlerThrows_RemoteExceptionWithMessage()
    {
        await using PeerConnection client = await ConnectAsync(_options);
        RemoteException error = await Assert.ThrowsAsync<RemoteException>(() => client.RequestAsync(Encoding.UTF8.GetBytes("fail")));
        Assert.Equal("InvalidOperationException: asked to fail", error.Message);
        Assert.Equal("InvalidOperationException", error.RemoteType);
        Assert.Equal("asked to fail", error.RemoteMessage);
        Assert.Equal("echo ok", Encoding.UTF8.GetString(await client.RequestAsync(Encoding.UTF8.GetBytes("echo ok"))));
    }

    [Fact]
    public async Task Request_FailurePassedOnFromAFurtherHop_KeepsItsFirstType()
    {
        // A's handler asks B, whose handler throws; A lets B's failure through. The caller of A sees B's type, as a
        // caller of B would (a grain that rethrows a remote refusal must not turn it into "RemoteException").
        await using PeerConnection toB = await ConnectAsync(_options);
        await using TransportServer a = await TransportServer.StartAsync(
            new IPEndPoint(IPAddress.Loopback, 0), _options, async (payload, ct) => await toB.RequestAsync(payload, ct), default);
        await using PeerConnection toA = await PeerConnection.ConnectAsync("127.0.0.1", a.Port, _options, null, default);
        RemoteException error = await Assert.ThrowsAsync<RemoteException>(() => toA.RequestAsync(Encoding.UTF8.GetBytes("fail")));
        Assert.Equal(("InvalidOperationException", "asked to fail"), (error.RemoteType, error.RemoteMessage));
    }

    [Fact]
    public async Task Request_NoAnswer_TimesOutAtDeadline()
    {
        await using PeerConnection client = await ConnectAsync(new TransportOptions { ClusterId = _options.ClusterId, Secret = Secret, RequestTimeout = TimeSpan.FromMilliseconds(300) });
        TimeoutException error = await Assert.ThrowsAsync<TimeoutException>(() => client.RequestAsync(Encoding.UTF8.GetBytes("hang")));
        Assert.Contains("no answer within 0.3 s", error.Message);
    }

    [Theory]
    [InlineData("test-cluster", "another secret, also long enough")]
    [InlineData("other-cluster", "a cluster secret of some length")]
    public async Task Connect_WrongSecretOrCluster_Refused(string cluster, string secret)
    {
        long refusedBefore = _server.Refused;
        var stranger = new TransportOptions { ClusterId = cluster, Secret = Encoding.UTF8.GetBytes(secret), HandshakeTimeout = TimeSpan.FromSeconds(5) };
        await Assert.ThrowsAnyAsync<Exception>(() => ConnectAsync(stranger));
        await using PeerConnection member = await ConnectAsync(_options);
        Assert.Equal("echo still serving", Encoding.UTF8.GetString(await member.RequestAsync(Encoding.UTF8.GetBytes("echo still serving"))));
        Assert.True(_server.Refused > refusedBefore);
    }

    [Fact]
    public async Task Fuzz_ThousandsOfRandomAndTruncatedFrames_ConnectionsClosedSiloServes()
    {
        // Its own server with a short handshake limit, so truncated hellos are cut off quickly.
        var options = new TransportOptions { ClusterId = _options.ClusterId, Secret = Secret, HandshakeTimeout = TimeSpan.FromMilliseconds(300), MaxFrameBytes = _options.MaxFrameBytes };
        await using TransportServer server = await TransportServer.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), options, Handle, default);
        var random = new Random(11);
        int closed = 0;
        var header = new byte[FrameHeader.Size];

        // Before the handshake: random bytes, truncated hellos, absurd lengths, on raw sockets.
        for (int batch = 0; batch < 25; batch++)
        {
            await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
            {
                byte[] bytes = (i % 4) switch
                {
                    0 => RandomBytes(random, 1 + (i * 7 % 300)),
                    1 => Header(FrameKind.Hello, 40)[..(5 + (i % 18))],
                    2 => Header(FrameKind.Hello, long.MaxValue),
                    _ => [.. Header((FrameKind)(i % 256), 10), .. RandomBytes(random, 10)],
                };
                using var tcp = new TcpClient();
                await tcp.ConnectAsync(IPAddress.Loopback, server.Port);
                NetworkStream stream = tcp.GetStream();
                if (await WriteOrResetAsync(stream, bytes) || await ReadsToEndAsync(stream))
                {
                    Interlocked.Increment(ref closed);
                }
            }));
        }

        // After a real handshake: garbage where the next frame should be.
        for (int i = 0; i < 200; i++)
        {
            PeerConnection peer = await PeerConnection.ConnectAsync("127.0.0.1", server.Port, _options, null, default);
            byte[] garbage = (i % 3) switch
            {
                0 => RandomBytes(random, 24 + (i % 50)),
                1 => Header(FrameKind.Hello, 0),
                _ => Header(FrameKind.Request, _options.MaxFrameBytes + 1L),
            };
            await peer.SendRawAsync(garbage, default);
            await peer.Completion.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(peer.Completion.IsCompletedSuccessfully);
            await peer.DisposeAsync();
            closed++;
        }

        Assert.Equal(1200, closed);
        Assert.True(server.Refused >= 1200, $"refused {server.Refused}");
        await using PeerConnection member = await PeerConnection.ConnectAsync("127.0.0.1", server.Port, _options, null, default);
        Assert.Equal("echo alive", Encoding.UTF8.GetString(await member.RequestAsync(Encoding.UTF8.GetBytes("echo alive"))));
    }

    private static byte[] Header(FrameKind kind, long length)
    {
        var bytes = new byte[FrameHeader.Size];
        new FrameHeader(kind, 1, length).Write(bytes);
        return bytes;
    }

    private static byte[] RandomBytes(Random random, int length)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>True when the server already reset the connection while the bytes were going out.</summary>
    private static async Task<bool> WriteOrResetAsync(NetworkStream stream, byte[] bytes)
    {
        try
        {
            await stream.WriteAsync(bytes);
            return false;
        }
        catch (IOException)
        {
            return true;
        }
    }

    /// <summary>True when the server closes the connection (within the handshake timeout plus slack).</summary>
    private static async Task<bool> ReadsToEndAsync(NetworkStream stream)
    {
        var buffer = new byte[4096];
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            while (await stream.ReadAsync(buffer, limit.Token) > 0)
            {
            }

            return true;
        }
        catch (IOException)
        {
            return true;
        }
    }

    private Task<PeerConnection> ConnectAsync(TransportOptions options) =>
        PeerConnection.ConnectAsync("127.0.0.1", _server.Port, options, null, default);

    private static async ValueTask<byte[]> Handle(ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        if (payload.Span.SequenceEqual("fail"u8))
        {
            throw new InvalidOperationException("asked to fail");
        }

        if (payload.Span.SequenceEqual("hang"u8))
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        return payload.ToArray();
    }
}
