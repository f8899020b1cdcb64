using LongCluster.Runtime.Hosting;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Redis;

namespace LongCluster.Runtime.Tests;

public sealed class RedisConnectionTests
{
    [Fact]
    public async Task Execute_SetGetAndTypes_RoundTripThroughRealServer()
    {
        await using RedisServerProcess server = await RedisServerProcess.StartAsync();
        await using var redis = new RedisConnection(new RedisOptions { Port = server.Port });
        Assert.Equal("PONG", (await redis.ExecuteAsync("PING")).AsString());
        Assert.Equal("OK", (await redis.ExecuteAsync("SET", "k", "välue\r\nwith crlf")).AsString());
        Assert.Equal("välue\r\nwith crlf", (await redis.ExecuteAsync("GET", "k")).AsString());
        Assert.True((await redis.ExecuteAsync("GET", "missing")).IsNull);
        Assert.Equal(3, (await redis.ExecuteAsync("RPUSH", "l", "a", "b", "c")).AsInteger());
        Assert.Equal(["a", "b", "c"], (await redis.ExecuteAsync("LRANGE", "l", "0", "-1")).AsArray().Select(v => v.AsString()!).ToArray());
        RespValue error = await redis.ExecuteAsync("INCR", "k");
        Assert.Equal(RespKind.Error, error.Kind);
        Assert.Contains("not an integer", Assert.Throws<RedisException>(() => error.AsInteger()).Message);
        Assert.Equal("PONG", (await redis.ExecuteAsync("PING")).AsString());
    }

    [Fact]
    public async Task Connect_Password_RightAcceptedWrongRefusedMissingRefused()
    {
        await using RedisServerProcess server = await RedisServerProcess.StartAsync(password: "s3cret");
        await using var right = new RedisConnection(new RedisOptions { Port = server.Port, Password = "s3cret" });
        Assert.Equal("PONG", (await right.ExecuteAsync("PING")).AsString());

        await using var wrong = new RedisConnection(new RedisOptions { Port = server.Port, Password = "guess" });
        RedisException refused = await Assert.ThrowsAsync<RedisException>(() => wrong.ExecuteAsync("PING"));
        Assert.Contains("AUTH refused", refused.Message);

        await using var none = new RedisConnection(new RedisOptions { Port = server.Port });
        RespValue reply = await none.ExecuteAsync("PING");
        Assert.Contains("NOAUTH", Assert.Throws<RedisException>(() => reply.AsString()).Message);
    }

    [Fact]
    public async Task Connect_Tls_WorksWithTrustedCertificateAndRefusesUntrusted()
    {
        string directory = Directory.CreateTempSubdirectory("lc-tls-").FullName;
        try
        {
            string cert = Path.Combine(directory, "cert.pem");
            string key = Path.Combine(directory, "key.pem");
            Run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1");
            await using RedisServerProcess server = await RedisServerProcess.StartAsync(tls: true, certificate: cert, key: key);
            using X509Certificate2 trusted = X509Certificate2.CreateFromPem(File.ReadAllText(cert));

            await using var redis = new RedisConnection(new RedisOptions
            {
                Port = server.Port,
                UseTls = true,
                TlsServerName = "localhost",
                ServerCertificateValidation = (_, certificate, _, _) => certificate?.GetCertHashString() == trusted.Thumbprint,
            });
            Assert.Equal("PONG", (await redis.ExecuteAsync("PING")).AsString());

            await using var strict = new RedisConnection(new RedisOptions { Port = server.Port, UseTls = true, TlsServerName = "localhost" });
            await Assert.ThrowsAsync<RedisException>(() => strict.ExecuteAsync("PING"));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Execute_ServerKilledAndRestarted_FailsOnceThenCarriesOn()
    {
        await using RedisServerProcess server = await RedisServerProcess.StartAsync();
        var table = new RedisMembershipTable(new RedisClusteringOptions { Redis = new RedisOptions { Port = server.Port } });
        await using (table)
        {
            var silo = new MembershipEntry(new SiloAddress("127.0.0.1", 1, 1), SiloStatus.Active, "a", DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch, []);
            Assert.True(await table.InsertRowAsync(silo, 0, default));

            await server.KillAsync();
            await Assert.ThrowsAsync<RedisException>(() => table.ReadAllAsync(default));
            await server.RestartAsync();

            // No persistence: the restarted server is empty, and the table works again without any reset by the caller.
            MembershipTableData data = await table.ReadAllAsync(default);
            Assert.Equal(0, data.Version);
            Assert.True(await table.InsertRowAsync(silo, 0, default));
        }
    }

    [Fact]
    public async Task Execute_ServerNeverAnswers_TimesOutAndNextCommandReconnects()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var accepted = new List<TcpClient>();
        Task accepting = Task.Run(async () =>
        {
            for (int i = 0; i < 2; i++)
            {
                accepted.Add(await listener.AcceptTcpClientAsync());
            }
        });
        await using var redis = new RedisConnection(new RedisOptions { Port = port, CommandTimeout = TimeSpan.FromMilliseconds(200) });

        var watch = Stopwatch.StartNew();
        TimeoutException timeout = await Assert.ThrowsAsync<TimeoutException>(() => redis.ExecuteAsync("PING"));
        Assert.Contains("PING got no reply within 0.2 s", timeout.Message);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
        await Assert.ThrowsAsync<TimeoutException>(() => redis.ExecuteAsync("PING"));
        await accepting.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2, accepted.Count);
        accepted.ForEach(c => c.Dispose());
    }

    [Theory]
    [InlineData("?what\r\n", "unknown reply type")]
    [InlineData("$99999999999\r\n", "bulk length")]
    [InlineData("*-5\r\n", "array length")]
    [InlineData(":12x\r\n", "not an integer")]
    [InlineData("$3\r\nabcXY", "not terminated by CRLF")]
    public async Task Execute_GarbledReply_FailsWithReasonAndDropsConnection(string reply, string expected)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task serving = Task.Run(async () =>
        {
            using TcpClient client = await listener.AcceptTcpClientAsync();
            NetworkStream stream = client.GetStream();
            var buffer = new byte[256];
            _ = await stream.ReadAsync(buffer);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(reply));
            _ = await stream.ReadAsync(buffer);
        });
        await using var redis = new RedisConnection(new RedisOptions { Port = port, CommandTimeout = TimeSpan.FromSeconds(5) });
        RedisException error = await Assert.ThrowsAsync<RedisException>(() => redis.ExecuteAsync("PING"));
        Assert.Contains(expected, error.Message);
        await serving.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Theory]
    [InlineData("", 6379, "Host is empty")]
    [InlineData("h", 0, "Port must be in 1..65535")]
    public void Options_OutOfRange_RefusedNamingSetting(string host, int port, string expected) =>
        Assert.Contains(expected, Assert.Throws<ArgumentException>(() => new RedisConnection(new RedisOptions { Host = host, Port = port })).Message);

    private static void Run(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(start)!;
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{file} failed: {errors}");
    }
}
