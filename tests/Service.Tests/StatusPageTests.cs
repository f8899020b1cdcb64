using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using LongCluster.Contracts;
using LongCluster.Grains;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace LongCluster.Service.Tests;

/// <summary>The status page at <c>/</c> on every silo: what it shows (in a real browser too), and who may see it.</summary>
public sealed class StatusPageTests(ClusterFixture fixture, ITestOutputHelper output) : IClassFixture<ClusterFixture>
{
    /// <summary>Debian's chromium: Playwright drives it instead of a browser of its own (whose download is not reachable here).</summary>
    private const string Chromium = "/usr/bin/chromium";

    private static readonly SequenceSpec Spec = new() { Layers = 2, QueryHeads = 4, KeyValueHeads = 2, HeadDim = 8, Layout = "zigzag", Mask = "causal", Shards = 3 };

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    [Fact]
    public async Task StatusPage_InChromiumAfterLogin_ShowsEverySiloAndTheSequence()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: this test runs the status page in Debian's chromium. Install it (apt-get install chromium; test.sh installs it when missing).");
        await PrefillAsync("status-browser", 48);
        try
        {
            using IPlaywright playwright = await Playwright.CreateAsync();
            await using IBrowser browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions { ExecutablePath = Chromium, Headless = true });
            IPage page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 900 } });
            var problems = new List<string>();
            page.Console += (_, message) =>
            {
                if (message.Type == "error")
                {
                    problems.Add(message.Text);
                }
            };
            page.PageError += (_, error) => problems.Add(error);

            IResponse? refused = await page.GotoAsync(fixture.Cluster.Endpoints[1].ToString());
            Assert.Equal(401, refused!.Status);
            await page.FillAsync("input[name=token]", fixture.StatusToken);
            IResponse login = await page.RunAndWaitForResponseAsync(() => page.ClickAsync("button[type=submit]"), r => r.Url.EndsWith("/login", StringComparison.Ordinal));
            Assert.Equal(303, login.Status);
            await page.Locator("#silos").WaitForAsync();
            problems.Clear(); // chromium logs the 401 of the login form as a failed resource

            ILocator silos = page.Locator("#silos tbody tr");
            Assert.Equal(3, await silos.CountAsync());
            foreach (LocalSilo silo in fixture.Cluster.Silos)
            {
                IReadOnlyList<string> cells = await page.Locator($"#silos tr[data-silo='{silo.Address}'] td").AllInnerTextsAsync();
                Assert.Equal([silo.Address, $"silo-{silo.Index}", "Active", silo.Endpoint.ToString().TrimEnd('/')], cells.Take(4));
                Assert.Equal(["0 B", "0 B", "status-browser"], cells.Skip(6).Take(3)); // no retrieval sequence: the memory tier holds nothing
            }

            IReadOnlyList<string> sequence = await page.Locator("#sequences tr[data-sequence='status-browser'] td").AllInnerTextsAsync();
            Assert.Equal(["status-browser", "Ready", "48", "zigzag", "causal", "2"], sequence.Take(6));
            Assert.Equal(3, await page.Locator("#shards tbody tr", new PageLocatorOptions { HasText = "status-browser" }).CountAsync());
            Assert.Equal(2, await page.Locator("#layers tbody tr", new PageLocatorOptions { HasText = "status-browser" }).CountAsync());

            // The page's script refreshes its content: a sequence created now appears without a reload.
            await fixture.Client.CreateSequenceAsync(Spec, "status-browser-later");
            await page.Locator("#sequences tr[data-sequence='status-browser-later']").WaitForAsync(new LocatorWaitForOptions { Timeout = 30_000 });
            IReadOnlyList<string> later = await page.Locator("#sequences tr[data-sequence='status-browser-later'] td").AllInnerTextsAsync();
            Assert.Equal(["status-browser-later", "Created", "0"], later.Take(3));

            string screenshot = Path.Combine(RepoRoot(), "artifacts", "test-results", "status-page.png");
            Directory.CreateDirectory(Path.GetDirectoryName(screenshot)!);
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot, FullPage = true });
            output.WriteLine($"screenshot of the status page: {screenshot}");
            Assert.True(new FileInfo(screenshot).Length > 0, $"{screenshot} is empty");
            Assert.True(problems.Count == 0, $"the page logged errors (a script refused by its CSP shows here): {string.Join(" | ", problems)}");
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("status-browser");
            await DeleteIfThereAsync("status-browser-later");
        }
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/?fragment=1")]
    [InlineData("/status.json")]
    public async Task Get_NoToken_Unauthorized(string path)
    {
        using HttpClient http = Http(0);
        using HttpResponseMessage response = await http.GetAsync(new Uri(path, UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        string body = await response.Content.ReadAsStringAsync();
        Assert.DoesNotContain(fixture.Cluster.Silos[0].Address, body);
        if (path == "/status.json")
        {
            Assert.Equal("unauthorized", JsonDocument.Parse(body).RootElement.GetProperty("code").GetString());
        }
        else
        {
            Assert.Contains("""<form method="post" action="/login">""", body);
            Assert.Contains("""name="token" """, body);
        }
    }

    [Theory]
    [InlineData("/")]
    [InlineData("/status.json")]
    public async Task Get_WrongToken_Unauthorized(string path)
    {
        using HttpClient http = Http(0, fixture.StatusToken + "x");
        using HttpResponseMessage response = await http.GetAsync(new Uri(path, UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task Get_ReadOnlyToken_OpensStatusButNotTheApi()
    {
        using HttpClient http = Http(2, fixture.StatusToken);
        using HttpResponseMessage page = await http.GetAsync(new Uri("/", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        string html = await page.Content.ReadAsStringAsync();
        Assert.All(fixture.Cluster.Silos, s => Assert.Contains($"<code>{s.Address}</code>", html));
        using HttpResponseMessage json = await http.GetAsync(new Uri("/status.json", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, json.StatusCode);

        using HttpResponseMessage list = await http.GetAsync(new Uri("/v1/sequences", UriKind.Relative));
        Assert.Equal(HttpStatusCode.Unauthorized, list.StatusCode);
        using HttpResponseMessage create = await http.PostAsync(new Uri("/v1/sequences?id=by-the-reader", UriKind.Relative), JsonContent(Spec));
        Assert.Equal(HttpStatusCode.Unauthorized, create.StatusCode);
        Assert.DoesNotContain(await fixture.Client.ListSequencesAsync(), s => s.Id == "by-the-reader");
    }

    [Fact]
    public async Task Get_ApiToken_OpensStatus()
    {
        using HttpClient http = Http(1, fixture.Cluster.ApiToken);
        using HttpResponseMessage page = await http.GetAsync(new Uri("/", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
    }

    [Fact]
    public async Task Login_RightToken_CookieOpensStatusOnEverySiloButNotTheApi()
    {
        using HttpClient http = Http(0);
        using HttpResponseMessage login = await http.PostAsync(new Uri("/login", UriKind.Relative), new FormUrlEncodedContent([new("token", fixture.StatusToken)]));
        Assert.Equal(HttpStatusCode.SeeOther, login.StatusCode);
        Assert.Equal("/", login.Headers.Location?.ToString());
        string setCookie = Assert.Single(login.Headers.GetValues("Set-Cookie"));
        Assert.StartsWith("longcluster-status=", setCookie, StringComparison.Ordinal);
        Assert.Contains("; httponly", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("; samesite=strict", setCookie, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain(fixture.StatusToken, Uri.UnescapeDataString(setCookie), StringComparison.Ordinal);
        string cookie = setCookie[..setCookie.IndexOf(';', StringComparison.Ordinal)];

        // Stateless: every silo sharing the token accepts the cookie another silo set.
        foreach (int silo in new[] { 0, 1, 2 })
        {
            using HttpClient other = Http(silo);
            other.DefaultRequestHeaders.Add("Cookie", cookie);
            using HttpResponseMessage page = await other.GetAsync(new Uri("/", UriKind.Relative));
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            using HttpResponseMessage api = await other.GetAsync(new Uri("/v1/sequences", UriKind.Relative));
            Assert.Equal(HttpStatusCode.Unauthorized, api.StatusCode);
        }

        // A cookie whose MAC is changed, or whose expiry is moved, opens nothing.
        string value = cookie["longcluster-status=".Length..];
        int dot = value.IndexOf('.', StringComparison.Ordinal);
        string flipped = value[..^1] + (value[^1] == 'A' ? 'B' : 'A');
        string later = (long.Parse(value[..dot], System.Globalization.CultureInfo.InvariantCulture) - 1).ToString(System.Globalization.CultureInfo.InvariantCulture) + value[dot..];
        foreach (string forged in new[] { flipped, later, fixture.StatusToken })
        {
            using HttpClient tampered = Http(1);
            tampered.DefaultRequestHeaders.Add("Cookie", $"longcluster-status={forged}");
            using HttpResponseMessage page = await tampered.GetAsync(new Uri("/", UriKind.Relative));
            Assert.Equal(HttpStatusCode.Unauthorized, page.StatusCode);
        }
    }

    [Fact]
    public async Task Login_WrongToken_UnauthorizedWithoutCookie()
    {
        using HttpClient http = Http(0);
        using HttpResponseMessage login = await http.PostAsync(new Uri("/login", UriKind.Relative), new FormUrlEncodedContent([new("token", "not the token, but long enough")]));
        Assert.Equal(HttpStatusCode.Unauthorized, login.StatusCode);
        Assert.False(login.Headers.Contains("Set-Cookie"));
        Assert.Contains("That token does not open the status page.", await login.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task StatusJson_AfterPrefill_EverySiloReportsItsBytesSequencesAndLayerRuns()
    {
        SequenceInfo info = await PrefillAsync("status-json", 40);
        try
        {
            using HttpClient http = Http(1, fixture.StatusToken);
            ClusterStatus status = JsonSerializer.Deserialize<ClusterStatus>(await http.GetStringAsync(new Uri("/status.json", UriKind.Relative)), Json)!;

            Assert.Equal(fixture.Cluster.Silos[1].Address, status.ServedBy);
            Assert.Equal(fixture.Cluster.Silos.Select(s => s.Address), status.Silos.Select(s => s.Address)); // silo-0, silo-1, silo-2: by name
            foreach (SiloView view in status.Silos)
            {
                LocalSilo silo = fixture.Cluster.Silos.Single(s => s.Address == view.Address);
                Assert.Equal("Active", view.Status);
                Assert.Null(view.Problem);
                Assert.NotNull(view.Report);
                Assert.Equal(silo.Resources.ResidentBytes, view.Report.ResidentBytes);
                Assert.Equal(fixture.Cluster.Options.MaxResidentBytes, view.Report.MaxResidentBytes);
                Assert.Equal(["status-json"], view.Report.Sequences);
                Assert.Equal(silo.Endpoint.ToString().TrimEnd('/'), view.Report.Endpoint);
                Assert.True(view.Report.ResidentBytes > 0, $"silo {view.Address} holds a shard of status-json but reports {view.Report.ResidentBytes} bytes");

                // The layer runs are kept by the silo whose coordinator ran them, and only there.
                var runs = view.Report.RecentLayers.Where(r => r.SequenceId == "status-json").ToList();
                if (view.Address == info.Coordinator)
                {
                    Assert.Equal([(0, 0), (0, 1)], runs.Select(r => (r.Chunk, r.Layer)));
                    Assert.All(runs, r => Assert.Equal([0, 1, 2], r.Shards.Select(t => t.Index)));
                    Assert.All(runs, r => Assert.True(r.Seconds > 0, $"layer {r.Layer} took {r.Seconds} s"));
                }
                else
                {
                    Assert.Empty(runs);
                }
            }

            SequenceInfo listed = Assert.Single(status.Sequences, s => s.Id == "status-json");
            Assert.Equal(SequenceState.Ready, listed.State);
            Assert.Equal(40, listed.Length);
            Assert.Equal(info.ShardMap.Select(s => s.Silo), listed.ShardMap.Select(s => s.Silo));
            Assert.Empty(status.UnreachableSequences);
        }
        finally
        {
            await fixture.Client.DeleteSequenceAsync("status-json");
        }
    }

    [Fact]
    public async Task StatusPage_HostileSequenceId_RenderedAsText()
    {
        // The HTTP API refuses such an id; a grain caller does not, and the page must not trust the directory either.
        const string Hostile = "<img src=x onerror=alert(1)>\"'&";
        ICoordinatorGrain coordinator = fixture.Cluster.Silos[0].Services.GetRequiredService<IGrainFactory>().GetGrain<ICoordinatorGrain>(Hostile);
        await coordinator.CreateAsync(Spec, CancellationToken.None);
        try
        {
            using HttpClient http = Http(0, fixture.StatusToken);
            foreach (string path in new[] { "/", "/?fragment=1" })
            {
                string html = await http.GetStringAsync(new Uri(path, UriKind.Relative));
                Assert.Contains("<code>&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;</code>", html);
                Assert.DoesNotContain("<img", html);
            }

            string json = await http.GetStringAsync(new Uri("/status.json", UriKind.Relative));
            ClusterStatus status = JsonSerializer.Deserialize<ClusterStatus>(json, Json)!;
            Assert.Contains(status.Sequences, s => s.Id == Hostile);
            Assert.DoesNotContain("<img", json);
        }
        finally
        {
            await coordinator.DeleteAsync(CancellationToken.None);
        }
    }

    [Fact]
    public void Validate_ShortStatusToken_NamesIt()
    {
        var options = new AttentionServiceOptions { ApiToken = "an api token, long enough", StatusToken = "too short" };
        ArgumentException e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.Equal(nameof(AttentionServiceOptions.StatusToken), e.ParamName);
    }

    private async Task<SequenceInfo> PrefillAsync(string id, int tokens)
    {
        var layers = Enumerable.Range(0, Spec.Layers).Select(l => Data.Layer(Spec, tokens, 10 * l)).ToArray();
        (SequenceInfo info, _) = await fixture.Client.CreateAndPrefillAsync(Spec, id, tokens, (l, _) => Data.Input(Spec, layers[l], 0, tokens));
        return info;
    }

    private async Task DeleteIfThereAsync(string id)
    {
        if ((await fixture.Client.ListSequencesAsync()).Any(s => s.Id == id))
        {
            await fixture.Client.DeleteSequenceAsync(id);
        }
    }

    /// <summary>A client of silo <paramref name="silo"/> that follows no redirects and keeps no cookies (the tests set them).</summary>
    private HttpClient Http(int silo, string? token = null)
    {
        var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false, UseCookies = false }) { BaseAddress = fixture.Cluster.Endpoints[silo] };
        if (token is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return http;
    }

    private static StringContent JsonContent(SequenceSpec spec) => new(JsonSerializer.Serialize(spec, Json), System.Text.Encoding.UTF8, "application/json");

    /// <summary>The checkout's root (the folder with LongCluster.sln), where test results go under <c>artifacts/test-results</c>.</summary>
    private static string RepoRoot()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "LongCluster.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"no LongCluster.sln above {AppContext.BaseDirectory}");
    }
}
