using System.Globalization;
using System.Text;

namespace LongCluster.Cli;

/// <summary>
/// Reads samples out of the Prometheus text exposition format (what a silo's <c>/metrics</c> answers): one sample a
/// line, <c>name{label="value",...} number [timestamp]</c>, with <c># HELP</c> / <c># TYPE</c> comments between.
/// Only what <c>bench load</c> needs: the samples of one metric, summed over their labels.
/// </summary>
internal static class PrometheusText
{
    /// <summary>
    /// The sum of every sample of <paramref name="metric"/> (over all its label sets), or null when the text has none.
    /// A counter is also found under <c>metric_total</c>, the name OpenTelemetry's exporter gives counters, when the
    /// text has no sample under the plain name.
    /// </summary>
    public static double? Sum(string text, string metric)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentException.ThrowIfNullOrEmpty(metric);
        double? sum = SumExact(text, metric);
        return sum is null && !metric.EndsWith("_total", StringComparison.Ordinal) ? SumExact(text, metric + "_total") : sum;
    }

    /// <summary>Every sample of exactly <paramref name="metric"/>: its labels and value.</summary>
    public static IReadOnlyList<(IReadOnlyDictionary<string, string> Labels, double Value)> Samples(string text, string metric)
    {
        ArgumentNullException.ThrowIfNull(text);
        var samples = new List<(IReadOnlyDictionary<string, string>, double)>();
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line[0] == '#' || !line.StartsWith(metric, StringComparison.Ordinal))
            {
                continue;
            }

            int at = metric.Length;
            if (at < line.Length && line[at] != '{' && !char.IsWhiteSpace(line[at]))
            {
                continue; // a longer name that starts with this one
            }

            var labels = new Dictionary<string, string>(StringComparer.Ordinal);
            if (at < line.Length && line[at] == '{')
            {
                at = ParseLabels(line, at + 1, labels);
            }

            string[] rest = line[at..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (rest.Length == 0)
            {
                throw new FormatException($"metric {metric}: a sample without a value: '{line}'");
            }

            samples.Add((labels, ParseValue(rest[0], line)));
        }

        return samples;
    }

    private static double? SumExact(string text, string metric)
    {
        IReadOnlyList<(IReadOnlyDictionary<string, string> Labels, double Value)> samples = Samples(text, metric);
        return samples.Count == 0 ? null : samples.Sum(s => s.Value);
    }

    /// <summary>Reads <c>name="value",...}</c> from <paramref name="start"/>; returns the index after the closing brace.</summary>
    private static int ParseLabels(string line, int start, Dictionary<string, string> labels)
    {
        int i = start;
        while (true)
        {
            while (i < line.Length && (line[i] == ',' || char.IsWhiteSpace(line[i])))
            {
                i++;
            }

            if (i < line.Length && line[i] == '}')
            {
                return i + 1;
            }

            int equals = line.IndexOf('=', i);
            if (equals < 0 || equals + 1 >= line.Length || line[equals + 1] != '"')
            {
                throw new FormatException($"a label without a quoted value: '{line}'");
            }

            string name = line[i..equals].Trim();
            var value = new StringBuilder();
            i = equals + 2;
            while (i < line.Length && line[i] != '"')
            {
                if (line[i] == '\\' && i + 1 < line.Length)
                {
                    i++;
                    value.Append(line[i] == 'n' ? '\n' : line[i]);
                }
                else
                {
                    value.Append(line[i]);
                }

                i++;
            }

            if (i >= line.Length)
            {
                throw new FormatException($"an unterminated label value: '{line}'");
            }

            labels[name] = value.ToString();
            i++;
        }
    }

    private static double ParseValue(string text, string line) => text switch
    {
        "+Inf" or "Inf" => double.PositiveInfinity,
        "-Inf" => double.NegativeInfinity,
        "NaN" => double.NaN,
        _ => double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value)
            ? value
            : throw new FormatException($"not a number '{text}' in '{line}'"),
    };
}
