using System.Net;
using System.Net.Http.Json;
using System.Text;
using LongCluster.Runtime.Hosting;
using LongCluster.Runtime.Membership;
using LongCluster.Runtime.Transport;

namespace LongCluster.Runtime.Tests;

public sealed class SiloTests
{
    private const string Secret = "a silo test secret of enough length";

    private static SiloOptions Options(string name) => new()
    {
        ClusterId = "silo-tests",
        Name = name,
        Host = "127.0.0.1",
        SiloPort = 0,
        HttpPort = 0,
        Secret = Secret,
        Timing = new MembershipOptions { HeartbeatInterval = TimeSpan.FromMilliseconds(50), DeathTimeout = TimeSpan.FromSeconds(2) },
    };

    [Fact]
    public async Task ThreeSilos_OneProcess_AllReadyAndSeeEachOther_GracefulLeaveSeenByOthers()
    {
        var table = new InMemoryMembershipTable();
        var silos = new List<Silo>();
        try
        {
            foreach (string name in new[] { "a", "b", "c" })
            {
                silos.Add(await Silo.StartAsync(Options(name), table, new GrainTypeRegistry()));
            }

            foreach (Silo silo in silos)
            {
                MembershipView view = await silo.Membership.WaitForViewAsync(v => v.ActiveSilos.Length == 3, default).WaitAsync(TimeSpan.FromSeconds(20));
                Assert.Equal(silos.Select(s => s.Address).OrderBy(a => a.ToString(), StringComparer.Ordinal), view.ActiveSilos);
            }

            using var http = new HttpClient();
            foreach (Silo silo in silos)
            {
                Assert.Equal("alive", await http.GetStringAsync($"http://127.0.0.1:{silo.HttpPort}/healthz"));
                Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"http://127.0.0.1:{silo.HttpPort}/readyz")).StatusCode);
                MembershipSummary summary = (await http.GetFromJsonAsync<MembershipSummary>($"http://127.0.0.1:{silo.HttpPort}/membership"))!;
                Assert.Equal(silo.Address.ToString(), summary.Silo);
                Assert.Equal(silo.Membership.View.Version, summary.Version);
                Assert.Equal(silos.Select(s => s.Address.ToString()).Order(StringComparer.Ordinal), summary.Active);
            }

            await using (PeerConnection peer = await PeerConnection.ConnectAsync("127.0.0.1", silos[1].Address.Port, new TransportOptions { ClusterId = "silo-tests", Secret = Encoding.UTF8.GetBytes(Secret) }, null, default))
            {
                Assert.Equal("pong", Encoding.UTF8.GetString(await peer.RequestAsync("ping"u8.ToArray())));
            }

            Silo leaving = silos[2];
            await leaving.StopAsync(default);
            Assert.False(leaving.IsReady);
            MembershipView after = await silos[0].Membership.WaitForViewAsync(v => v.StatusOf(leaving.Address) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(20));
            Assert.Equal(2, after.ActiveSilos.Length);
            Assert.Empty((await table.ReadAllAsync(default)).Find(leaving.Address)!.Value.Entry.Suspicions);
        }
        finally
        {
            foreach (Silo silo in silos)
            {
                await silo.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task SiloWithoutHeartbeat_OthersDeclareItDeadWithinDeathTimeout()
    {
        var table = new InMemoryMembershipTable();
        await using Silo a = await Silo.StartAsync(Options("a"), table, new GrainTypeRegistry());
        Silo b = await Silo.StartAsync(Options("b"), table, new GrainTypeRegistry());
        await a.Membership.WaitForViewAsync(v => v.ActiveSilos.Length == 2, default).WaitAsync(TimeSpan.FromSeconds(20));

        // Dispose without leaving: the process is gone as far as the cluster can tell.
        await b.DisposeAsync();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await a.Membership.WaitForViewAsync(v => v.StatusOf(b.Address) == SiloStatus.Dead, default).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"declared dead after {watch.Elapsed}");
    }

    [Theory]
    [InlineData("", "Secret must be set")]
    [InlineData("short", "Secret must be set")]
    public async Task Start_BadOptions_RefusedBeforeListening(string secret, string expected)
    {
        SiloOptions options = Options("x");
        options.Secret = secret;
        ArgumentException error = await Assert.ThrowsAsync<ArgumentException>(() => Silo.StartAsync(options, new InMemoryMembershipTable(), new GrainTypeRegistry()));
        Assert.Contains(expected, error.Message);
    }
}
