using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using LongCluster.Grains;
using Microsoft.AspNetCore.Http;

namespace LongCluster.Service;

/// <summary>
/// Who may see the status page: a request with <c>Authorization: Bearer</c> the API token or the read-only
/// <see cref="AttentionServiceOptions.StatusToken"/>, or with the cookie <see cref="CookieName"/> that
/// <c>POST /login</c> sets. The cookie is <c>expiry.HMAC-SHA256(token, expiry)</c>: not the token, stateless, so
/// every silo sharing the token accepts it, and worthless after <see cref="CookieLifetime"/>. The <c>/v1</c> API
/// reads only the Authorization header and only the API token, so neither the cookie nor the read-only token
/// opens it. Tokens are compared as SHA-256 digests with <see cref="CryptographicOperations.FixedTimeEquals"/>,
/// which hides their length as well as their bytes.
/// </summary>
internal sealed class StatusAccess
{
    /// <summary>Name of the login cookie.</summary>
    public const string CookieName = "longcluster-status";

    /// <summary>How long a login lasts: a working day, after which the browser shows the login form again.</summary>
    public static readonly TimeSpan CookieLifetime = TimeSpan.FromHours(12);

    private static readonly byte[] CookieLabel = "longcluster status cookie v1|"u8.ToArray();

    private readonly byte[][] _tokens;
    private readonly byte[][] _digests;
    private readonly TimeProvider _time;

    public StatusAccess(AttentionServiceOptions options, TimeProvider time)
    {
        _tokens = [.. new[] { options.ApiToken, options.StatusToken }.Where(t => t.Length > 0).Distinct(StringComparer.Ordinal).Select(Encoding.UTF8.GetBytes)];
        _digests = [.. _tokens.Select(SHA256.HashData)];
        _time = time;
    }

    /// <summary>Whether <paramref name="request"/> carries a token or a live login cookie that opens the status page.</summary>
    public bool Allows(HttpRequest request)
    {
        string header = request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.Ordinal))
        {
            return Matches(header["Bearer ".Length..].Trim()) is not null;
        }

        return request.Cookies.TryGetValue(CookieName, out string? cookie) && CookieValid(cookie);
    }

    /// <summary>The cookie value for a login with <paramref name="presented"/>, or null when it is not a token that opens the page.</summary>
    public string? Login(string presented)
    {
        if (Matches(presented) is not { } token)
        {
            return null;
        }

        long expires = _time.GetUtcNow().Add(CookieLifetime).ToUnixTimeSeconds();
        return string.Create(CultureInfo.InvariantCulture, $"{expires}.{Base64Url.EncodeToString(Mac(token, expires))}");
    }

    private byte[]? Matches(string presented)
    {
        byte[] digest = SHA256.HashData(Encoding.UTF8.GetBytes(presented));
        byte[]? found = null;
        for (int i = 0; i < _tokens.Length; i++)
        {
            // Every token is compared, so the time taken does not tell which one matched.
            if (CryptographicOperations.FixedTimeEquals(digest, _digests[i]))
            {
                found = _tokens[i];
            }
        }

        return found;
    }

    private bool CookieValid(string cookie)
    {
        int dot = cookie.IndexOf('.', StringComparison.Ordinal);
        if (dot <= 0
            || !long.TryParse(cookie.AsSpan(0, dot), NumberStyles.None, CultureInfo.InvariantCulture, out long expires)
            || expires <= _time.GetUtcNow().ToUnixTimeSeconds()
            || expires > _time.GetUtcNow().Add(CookieLifetime).ToUnixTimeSeconds())
        {
            return false;
        }

        byte[] presented;
        try
        {
            presented = Base64Url.DecodeFromChars(cookie.AsSpan(dot + 1));
        }
        catch (FormatException)
        {
            return false;
        }

        bool valid = false;
        foreach (byte[] token in _tokens)
        {
            valid |= CryptographicOperations.FixedTimeEquals(presented, Mac(token, expires));
        }

        return valid;
    }

    private static byte[] Mac(byte[] token, long expires)
    {
        byte[] message = [.. CookieLabel, .. Encoding.ASCII.GetBytes(expires.ToString(CultureInfo.InvariantCulture))];
        return HMACSHA256.HashData(token, message);
    }
}
