using System.Globalization;
using System.Text.RegularExpressions;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A network link between silos, <c>RATE:LATENCY</c> as <c>bench scaling --link</c> takes it (<c>10gbit:50us</c>):
/// the bandwidth each silo can send at, and the one-way delay each of its packets gets.
/// </summary>
/// <param name="BitsPerSecond">Rate of each silo's outgoing link, bits per second (&gt; 0).</param>
/// <param name="LatencyMicroseconds">One-way delay added to each packet a silo sends, microseconds (&gt;= 0).</param>
/// <param name="Text">As given (<c>10gbit:50us</c>).</param>
internal sealed partial record LinkShape(double BitsPerSecond, double LatencyMicroseconds, string Text)
{
    /// <summary>Parses <c>RATE:LATENCY</c>: RATE a number with bit, kbit, mbit, gbit or tbit (decimal, as tc reads them); LATENCY with us, ms or s.</summary>
    /// <exception cref="FormatException">Naming what was expected.</exception>
    public static LinkShape Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Match match = Pattern().Match(text.Trim());
        if (!match.Success)
        {
            throw new FormatException($"expected RATE:LATENCY such as 10gbit:50us (rate in bit, kbit, mbit, gbit or tbit; latency in us, ms or s), got '{text}'");
        }

        double rate = double.Parse(match.Groups["rate"].Value, CultureInfo.InvariantCulture) * match.Groups["rateUnit"].Value.ToLowerInvariant() switch
        {
            "bit" => 1,
            "kbit" => 1e3,
            "mbit" => 1e6,
            "gbit" => 1e9,
            _ => 1e12,
        };
        double latency = double.Parse(match.Groups["latency"].Value, CultureInfo.InvariantCulture) * match.Groups["latencyUnit"].Value.ToLowerInvariant() switch
        {
            "us" => 1,
            "ms" => 1e3,
            _ => 1e6,
        };
        if (rate < 8000)
        {
            throw new FormatException($"the rate must be at least 8kbit (tc shapes no slower), got '{match.Groups["rate"].Value}{match.Groups["rateUnit"].Value}'");
        }

        return new LinkShape(rate, latency, text.Trim());
    }

    /// <summary>The rate as given (<c>10gbit</c>).</summary>
    public string RateText => Text[..Text.IndexOf(':', StringComparison.Ordinal)];

    /// <summary>The latency as given (<c>50us</c>).</summary>
    public string LatencyText => Text[(Text.IndexOf(':', StringComparison.Ordinal) + 1)..];

    /// <summary>The rate as tc reads it: whole bits per second.</summary>
    public string TcRate => string.Create(CultureInfo.InvariantCulture, $"{Math.Round(BitsPerSecond):0}bit");

    /// <summary>The latency as tc reads it: whole microseconds.</summary>
    public string TcLatency => string.Create(CultureInfo.InvariantCulture, $"{Math.Round(LatencyMicroseconds):0}us");

    [GeneratedRegex(@"^(?<rate>\d+(\.\d+)?)(?<rateUnit>bit|kbit|mbit|gbit|tbit):(?<latency>\d+(\.\d+)?)(?<latencyUnit>us|ms|s)$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Pattern();
}
