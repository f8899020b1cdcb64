using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;

namespace LongCluster.Cli;

/// <summary>
/// Reads the silos' managed heap and RSS from their <c>/metrics</c> (the .NET runtime's "System.Runtime" meter, as
/// Prometheus text): the heap is <see cref="HeapMetric"/> summed over its <c>gc_heap_generation</c> labels — what
/// the generations held after the last GC — and RSS is <see cref="RssMetric"/>. A silo that serves no metrics gives
/// no figure (null), never an estimate; nothing here forces a GC.
/// </summary>
internal sealed class SiloMemory(HttpClient http, string token) : IDisposable
{
    public const string HeapMetric = "dotnet_gc_last_collection_heap_size_bytes";
    public const string RssMetric = "dotnet_process_memory_working_set_bytes";

    private readonly ConcurrentDictionary<string, Uri> _silos = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _told = new(StringComparer.Ordinal);

    /// <summary>Silos scraped, by base URL, in the order first seen.</summary>
    public IReadOnlyList<string> Silos => [.. _silos.Keys.Order(StringComparer.Ordinal)];

    /// <summary>Adds a silo's HTTP base URL (from a shard map, say); known ones are ignored.</summary>
    public void Add(string endpoint)
    {
        if (Uri.TryCreate(endpoint.TrimEnd('/') + "/", UriKind.Absolute, out Uri? uri))
        {
            _silos.TryAdd(uri.GetLeftPart(UriPartial.Authority), uri);
        }
    }

    /// <summary>
    /// Heap and RSS in MB of every silo known (null where it gave none) and notes about silos that gave none, each
    /// told once per reason.
    /// </summary>
    public async Task<(Dictionary<string, (double? HeapMb, double? RssMb)> Silos, List<string> Notes)> ReadAsync(CancellationToken cancellationToken)
    {
        var notes = new List<string>();
        var result = new Dictionary<string, (double?, double?)>(StringComparer.Ordinal);
        foreach ((string name, Uri silo) in _silos.OrderBy(s => s.Key, StringComparer.Ordinal))
        {
            (double? heap, double? rss, string? problem) = await ReadOneAsync(silo, cancellationToken).ConfigureAwait(false);
            result[name] = (heap / 1e6, rss / 1e6);
            if (problem is not null && _told.TryAdd(name + problem, problem))
            {
                notes.Add($"silo {name} {problem}: its heap and RSS are reported as missing (null)");
            }
        }

        return (result, notes);
    }

    public void Dispose() => http.Dispose();

    private async Task<(double? Heap, double? Rss, string? Problem)> ReadOneAsync(Uri silo, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(silo, "metrics"));
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        string text;
        try
        {
            using HttpResponseMessage response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return (null, null, "serves no /metrics (404)");
            }

            if (!response.IsSuccessStatusCode)
            {
                return (null, null, $"answered /metrics with {(int)response.StatusCode}");
            }

            text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            return (null, null, $"did not answer /metrics ({e.HttpRequestError})");
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return (null, null, "did not answer /metrics in time");
        }

        try
        {
            double? heap = PrometheusText.Sum(text, HeapMetric);
            double? rss = PrometheusText.Sum(text, RssMetric);
            string? problem = heap is null || rss is null ? $"has no {(heap is null ? HeapMetric : RssMetric)} in its /metrics" : null;
            return (heap, rss, problem);
        }
        catch (FormatException e)
        {
            return (null, null, $"answered /metrics with text that is not Prometheus' format ({e.Message})");
        }
    }
}
