using System.Security.Cryptography;
using System.Text.Json;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Grains.Status;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;

namespace LongCluster.Service;

/// <summary>
/// The status page on every silo: <c>GET /</c> (server-rendered HTML that refreshes itself), <c>GET /status.json</c>
/// (the same facts as JSON), <c>POST /login</c> and <c>POST /logout</c>. Each request gathers the facts afresh: the
/// silos from this silo's membership view, each Active silo's own report from its <see cref="ISiloStatusService"/>,
/// and every listed sequence from its coordinator. A silo or coordinator that does not answer within
/// <see cref="AskTimeout"/> is shown as such; the page itself still answers. Access: <see cref="StatusAccess"/>.
/// </summary>
internal static class StatusPage
{
    /// <summary>How long the page waits for one silo's report or one coordinator's description: a status page must answer while a silo hangs.</summary>
    public static readonly TimeSpan AskTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Largest login form: one token field, with room to spare.</summary>
    private const long MaxLoginBytes = 4096;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static void Map(WebApplication app, AttentionServiceOptions options)
    {
        var access = new StatusAccess(options, app.Services.GetService<TimeProvider>() ?? TimeProvider.System);

        app.MapGet("/", async (HttpContext http, string? fragment) =>
        {
            Harden(http.Response);
            if (!access.Allows(http.Request))
            {
                return Refuse(http.Response, StatusHtml.Login(null));
            }

            ClusterStatus status = await GatherAsync(http.RequestServices, http.RequestAborted).ConfigureAwait(false);
            if (fragment is not null)
            {
                return Results.Content(StatusHtml.Content(status), "text/html; charset=utf-8");
            }

            string nonce = Convert.ToBase64String(RandomNumberGenerator.GetBytes(16));
            http.Response.Headers.ContentSecurityPolicy =
                $"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
            return Results.Content(StatusHtml.Page(status, nonce), "text/html; charset=utf-8");
        });
        app.MapGet("/status.json", async (HttpContext http) =>
        {
            Harden(http.Response);
            if (!access.Allows(http.Request))
            {
                http.Response.Headers.WWWAuthenticate = "Bearer";
                return Results.Json(new ApiError("missing or wrong token (Authorization: Bearer <token>, or log in at /)", "Authorization", false, "unauthorized"), Json, statusCode: StatusCodes.Status401Unauthorized);
            }

            return Results.Json(await GatherAsync(http.RequestServices, http.RequestAborted).ConfigureAwait(false), Json);
        });
        app.MapPost("/login", async (HttpContext http) =>
        {
            Harden(http.Response);
            if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
            {
                limit.MaxRequestBodySize = MaxLoginBytes;
            }

            if (!http.Request.HasFormContentType || http.Request.ContentLength > MaxLoginBytes)
            {
                return Results.Content(StatusHtml.Login($"expected a form (application/x-www-form-urlencoded, at most {MaxLoginBytes} bytes) with the field 'token'"), "text/html; charset=utf-8", statusCode: StatusCodes.Status400BadRequest);
            }

            IFormCollection form = await http.Request.ReadFormAsync(http.RequestAborted).ConfigureAwait(false);
            if (access.Login(form["token"].ToString()) is not { } cookie)
            {
                return Refuse(http.Response, StatusHtml.Login("That token does not open the status page."));
            }

            http.Response.Cookies.Append(StatusAccess.CookieName, cookie, new CookieOptions
            {
                HttpOnly = true,
                SameSite = SameSiteMode.Strict,
                Secure = http.Request.IsHttps,
                Path = "/",
                MaxAge = StatusAccess.CookieLifetime,
            });
            return SeeThePage(http.Response);
        });
        app.MapPost("/logout", (HttpContext http) =>
        {
            Harden(http.Response);
            http.Response.Cookies.Delete(StatusAccess.CookieName, new CookieOptions { Path = "/" });
            return SeeThePage(http.Response);
        });
    }

    /// <summary>The cluster as this silo sees it now; see <see cref="ClusterStatus"/>.</summary>
    internal static async Task<ClusterStatus> GatherAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        ClusterMembershipSnapshot snapshot = services.GetRequiredService<IClusterMembershipService>().CurrentSnapshot;
        SiloStatusClient client = services.GetRequiredService<SiloStatusClient>();
        Task<SiloView>[] silos = [.. snapshot.Members.Values
            .OrderBy(m => m.Name, StringComparer.Ordinal)
            .ThenBy(m => m.SiloAddress.ToParsableString(), StringComparer.Ordinal)
            .Select(m => ViewAsync(m, client, cancellationToken))];
        (List<SequenceInfo> sequences, Dictionary<string, string> unreachable) = await SequencesAsync(services.GetRequiredService<IGrainFactory>(), cancellationToken).ConfigureAwait(false);
        return new ClusterStatus(
            services.GetRequiredService<ILocalSiloDetails>().SiloAddress.ToParsableString(),
            (services.GetService<TimeProvider>() ?? TimeProvider.System).GetUtcNow(),
            snapshot.Version.Value,
            await Task.WhenAll(silos).ConfigureAwait(false),
            sequences,
            unreachable);
    }

    private static async Task<SiloView> ViewAsync(ClusterMember member, SiloStatusClient client, CancellationToken cancellationToken)
    {
        string address = member.SiloAddress.ToParsableString();
        if (member.Status != SiloStatus.Active)
        {
            return new SiloView(address, member.Name, member.Status.ToString(), null, null);
        }

        try
        {
            SiloReport report = await client.On(member.SiloAddress).ReportAsync(cancellationToken).WaitAsync(AskTimeout, cancellationToken).ConfigureAwait(false);
            return new SiloView(address, member.Name, member.Status.ToString(), report, null);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            return new SiloView(address, member.Name, member.Status.ToString(), null, $"did not answer: {e.Message}");
        }
    }

    private static async Task<(List<SequenceInfo> Sequences, Dictionary<string, string> Unreachable)> SequencesAsync(IGrainFactory grains, CancellationToken cancellationToken)
    {
        string[] ids = await grains.GetGrain<ISequenceDirectoryGrain>("all").ListAsync(cancellationToken).WaitAsync(AskTimeout, cancellationToken).ConfigureAwait(false);
        var described = await Task.WhenAll(ids.Select(async id =>
        {
            try
            {
                return (Id: id, Info: await grains.GetGrain<ICoordinatorGrain>(id).DescribeAsync(cancellationToken).WaitAsync(AskTimeout, cancellationToken).ConfigureAwait(false), Problem: (string?)null);
            }
            catch (Exception e) when (ClientApi.Classify(e).Status == StatusCodes.Status404NotFound)
            {
                return (Id: id, Info: (SequenceInfo?)null, Problem: (string?)null); // listed but gone (its coordinator's silo failed)
            }
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
            {
                return (Id: id, Info: (SequenceInfo?)null, Problem: $"its coordinator did not answer: {e.Message}");
            }
        })).ConfigureAwait(false);
        return (
            [.. described.Where(d => d.Info is not null).Select(d => d.Info!)],
            described.Where(d => d.Problem is not null).ToDictionary(d => d.Id, d => d.Problem!, StringComparer.Ordinal));
    }

    /// <summary>303 to <c>/</c>: after a POST the browser GETs the page (and a reload does not post the token again).</summary>
    private static IResult SeeThePage(HttpResponse response)
    {
        response.Headers.Location = "/";
        return Results.StatusCode(StatusCodes.Status303SeeOther);
    }

    private static IResult Refuse(HttpResponse response, string loginPage)
    {
        response.Headers.WWWAuthenticate = "Bearer";
        return Results.Content(loginPage, "text/html; charset=utf-8", statusCode: StatusCodes.Status401Unauthorized);
    }

    /// <summary>No caching (the page is live and private), no sniffing, no framing, no referrer, no script (the page's own, with a nonce, aside).</summary>
    private static void Harden(HttpResponse response)
    {
        response.Headers.ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
        response.Headers.CacheControl = "no-store";
        response.Headers.XContentTypeOptions = "nosniff";
        response.Headers.XFrameOptions = "DENY";
        response.Headers["Referrer-Policy"] = "no-referrer";
    }
}
