using System.Globalization;
using System.Net;
using System.Text;
using LongCluster.Contracts;
using LongCluster.Grains.Status;

namespace LongCluster.Service;

/// <summary>
/// The status page's HTML, rendered on the server. Every value that comes from outside this file (sequence ids,
/// masks and layouts are client input; silo names come from configuration; error messages quote both) goes
/// through <see cref="E"/>, so markup in them arrives as text. No external assets: one inline style sheet and one
/// inline script, both allowed by the response's nonce.
/// </summary>
internal static class StatusHtml
{
    /// <summary>Seconds between the script's refreshes of the page's content.</summary>
    public const int RefreshSeconds = 5;

    private const string Style = """
        body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
        header { display: flex; align-items: baseline; gap: 1em; }
        h1 { font-size: 1.4em; margin: 0; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
        table { border-collapse: collapse; margin: .3em 0; }
        th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
        th { background: #f2f2f2; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
        code { font-size: .95em; } .note, .meta { color: #555; } .problem { color: #a40000; }
        .Active, .Ready { color: #0a6b0a; font-weight: 600; } .Dead, .Degraded { color: #a40000; font-weight: 600; }
        .Prefilling, .Joining, .ShuttingDown, .Stopping { color: #8a5a00; font-weight: 600; }
        form { display: inline; } #refresh { margin-top: 1.5em; }
        """;

    /// <summary>The whole page: header, the content (<see cref="Content"/>) in <c>main#status</c>, and the refresh script.</summary>
    public static string Page(ClusterStatus status, string nonce)
    {
        var html = new StringBuilder();
        html.Append(CultureInfo.InvariantCulture, $"""
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>LongCluster status</title>
            <style nonce="{nonce}">{Style}</style>
            </head>
            <body>
            <header><h1>LongCluster status</h1><form method="post" action="/logout"><button type="submit">Log out</button></form></header>
            <main id="status">
            """);
        html.Append(Content(status));
        html.Append(CultureInfo.InvariantCulture, $$"""
            </main>
            <p class="note" id="refresh">Refreshes every {{RefreshSeconds}} s. The same facts as JSON: <a href="/status.json">/status.json</a>.</p>
            <script nonce="{{nonce}}">
            // Re-fetches the server-rendered content (escaped there) and swaps it in; a lost login shows the login form.
            (() => {
              const main = document.getElementById('status');
              const note = document.getElementById('refresh');
              async function refresh() {
                try {
                  const response = await fetch('/?fragment=1', { cache: 'no-store', credentials: 'same-origin' });
                  if (response.status === 401) { location.reload(); return; }
                  if (!response.ok) { throw new Error('HTTP ' + response.status); }
                  main.innerHTML = await response.text();
                  note.textContent = 'Refreshes every {{RefreshSeconds}} s; last at ' + new Date().toLocaleTimeString() + '.';
                } catch (e) {
                  note.textContent = 'Refresh failed (' + e.message + '); trying again in {{RefreshSeconds}} s.';
                }
              }
              setInterval(refresh, {{RefreshSeconds * 1000}});
            })();
            </script>
            </body>
            </html>
            """);
        return html.ToString();
    }

    /// <summary>What <c>main#status</c> holds: the silos, the sequences and their shard map, the recent layer runs.</summary>
    public static string Content(ClusterStatus status)
    {
        var html = new StringBuilder();
        html.Append(CultureInfo.InvariantCulture, $"""<p class="meta">Gathered by silo <code>{E(status.ServedBy)}</code> at {status.Time:yyyy-MM-dd HH:mm:ss} UTC from membership version {status.MembershipVersion}.</p>""").Append('\n');
        Silos(html, status.Silos);
        Sequences(html, status);
        Layers(html, status.Silos);
        return html.ToString();
    }

    /// <summary>The page shown with a 401: what it is, and a form that posts a token to <c>/login</c>.</summary>
    public static string Login(string? problem)
    {
        string said = problem is null ? "" : $"<p class=\"problem\" id=\"login-problem\">{E(problem)}</p>";
        return $"""
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>LongCluster status: log in</title>
            <style>{Style}</style>
            </head>
            <body>
            <h1>LongCluster status</h1>
            <p>This page needs the cluster's API token or its read-only status token
            (<code>Authorization: Bearer &lt;token&gt;</code>, or log in here for a cookie).</p>
            {said}
            <form method="post" action="/login">
            <label>Token <input type="password" name="token" autocomplete="current-password" required autofocus></label>
            <button type="submit">Log in</button>
            </form>
            </body>
            </html>
            """;
    }

    private static void Silos(StringBuilder html, IReadOnlyList<SiloView> silos)
    {
        html.Append(CultureInfo.InvariantCulture, $"""
            <h2>Silos ({silos.Count})</h2>
            <table id="silos">
            <thead><tr><th>silo</th><th>name</th><th>status</th><th>client API</th><th class="num">resident</th><th class="num">budget</th><th class="num">memory tier</th><th class="num">spilled</th><th>sequences with a shard here</th></tr></thead>
            <tbody>

            """);
        foreach (SiloView silo in silos)
        {
            html.Append(CultureInfo.InvariantCulture, $"""<tr data-silo="{E(silo.Address)}"><td><code>{E(silo.Address)}</code></td><td>{E(silo.Name)}</td><td><span class="{E(silo.Status)}">{E(silo.Status)}</span></td>""");
            if (silo.Report is { } report)
            {
                html.Append(CultureInfo.InvariantCulture, $"""<td>{E(report.Endpoint)}</td><td class="num">{Bytes(report.ResidentBytes)}</td><td class="num">{Bytes(report.MaxResidentBytes)}</td><td class="num">{Bytes(report.MemoryResidentBytes)}</td><td class="num">{Bytes(report.MemorySpilledBytes)}</td><td>{E(string.Join(", ", report.Sequences))}</td>""");
            }
            else
            {
                html.Append(CultureInfo.InvariantCulture, $"""<td colspan="6" class="problem">{E(silo.Problem ?? "")}</td>""");
            }

            html.Append("</tr>\n");
        }

        html.Append("""
            </tbody>
            </table>
            <p class="note">Resident: bytes a silo's shards hold in memory (KV of every layer, pending uploads, unread outputs), against its budget (<code>MaxResidentBytes</code>). Memory tier: evicted blocks of retrieval sequences (K, V, key sums) its memory grains hold in memory, against <code>Service:MemoryBudgetBytes</code>; spilled: their K and V in memory-mapped files past it.</p>

            """);
    }

    private static void Sequences(StringBuilder html, ClusterStatus status)
    {
        html.Append(CultureInfo.InvariantCulture, $"""
            <h2>Sequences ({status.Sequences.Count + status.UnreachableSequences.Count})</h2>
            <table id="sequences">
            <thead><tr><th>sequence</th><th>state</th><th class="num">length</th><th>layout</th><th>mask</th><th class="num">layers</th><th>heads (q/kv) × d, dtype</th><th class="num">shards</th><th>coordinator</th><th>in flight</th><th>problem</th></tr></thead>
            <tbody>

            """);
        foreach (SequenceInfo s in status.Sequences)
        {
            SequenceSpec spec = s.Spec;
            string progress = s.Chunk is { } c
                ? string.Create(CultureInfo.InvariantCulture, $"chunk {c.Index} ({c.Tokens} tokens): {c.LayersDone} of {spec.Layers} layers")
                : s.DecodeLayersDone > 0 ? string.Create(CultureInfo.InvariantCulture, $"decode: {s.DecodeLayersDone} of {spec.Layers} layers") : "";
            html.Append(CultureInfo.InvariantCulture, $"""<tr data-sequence="{E(s.Id)}"><td><code>{E(s.Id)}</code></td><td><span class="{E(s.State.ToString())}">{E(s.State.ToString())}</span></td><td class="num">{s.Length}</td><td>{E(spec.Layout)}</td><td>{E(spec.Mask)}</td><td class="num">{spec.Layers}</td><td>{spec.QueryHeads}/{spec.KeyValueHeads} × {spec.HeadDim}, {E(spec.DType)}</td><td class="num">{s.Shards}</td><td><code>{E(s.Coordinator ?? "")}</code></td><td>{E(progress)}</td><td class="problem">{E(s.Problem ?? "")}</td></tr>""").Append('\n');
        }

        foreach ((string id, string problem) in status.UnreachableSequences.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            html.Append(CultureInfo.InvariantCulture, $"""<tr data-sequence="{E(id)}"><td><code>{E(id)}</code></td><td colspan="10" class="problem">{E(problem)}</td></tr>""").Append('\n');
        }

        html.Append("""
            </tbody>
            </table>
            <h2>Shard map</h2>
            <table id="shards">
            <thead><tr><th>sequence</th><th class="num">shard</th><th>silo</th><th>client API</th><th class="num">stored rows</th><th class="num">resident</th></tr></thead>
            <tbody>

            """);
        foreach (SequenceInfo s in status.Sequences)
        {
            foreach (ShardInfo shard in s.ShardMap)
            {
                html.Append(CultureInfo.InvariantCulture, $"""<tr><td><code>{E(s.Id)}</code></td><td class="num">{shard.Index}</td><td><code>{E(shard.Silo)}</code></td><td>{E(shard.Endpoint)}</td><td class="num">{shard.StoredRows}</td><td class="num">{Bytes(shard.ResidentBytes)}</td></tr>""").Append('\n');
            }
        }

        html.Append("</tbody>\n</table>\n");
    }

    private static void Layers(StringBuilder html, IReadOnlyList<SiloView> silos)
    {
        var runs = silos
            .Where(s => s.Report is not null)
            .SelectMany(s => s.Report!.RecentLayers.Select(run => (Silo: s.Address, Run: run)))
            .OrderByDescending(r => r.Run.Finished)
            .ToList();
        html.Append(CultureInfo.InvariantCulture, $"""
            <h2>Recent layer runs ({runs.Count})</h2>
            <p class="note">The last {RecentLayers.Capacity} layer runs of each silo's coordinators, newest first. Per shard, in milliseconds: compute / waiting for the next block / all-to-all (scatter + gather) / transfer of its outgoing blocks (overlaps compute).</p>
            <table id="layers">
            <thead><tr><th>finished (UTC)</th><th>coordinator silo</th><th>sequence</th><th class="num">chunk</th><th class="num">layer</th><th class="num">seconds</th><th>per shard: compute / waiting / all-to-all / transfer (ms)</th></tr></thead>
            <tbody>

            """);
        foreach ((string silo, LayerTiming run) in runs)
        {
            string shards = string.Join("; ", run.Shards.Select(t => string.Create(
                CultureInfo.InvariantCulture,
                $"#{t.Index} {Ms(t.ComputeSeconds)} / {Ms(t.WaitingSeconds)} / {Ms(t.ScatterSeconds + t.GatherSeconds)} / {Ms(t.TransferSeconds)}")));
            html.Append(CultureInfo.InvariantCulture, $"""<tr><td>{run.Finished:HH:mm:ss.fff}</td><td><code>{E(silo)}</code></td><td><code>{E(run.SequenceId)}</code></td><td class="num">{run.Chunk}</td><td class="num">{run.Layer}</td><td class="num">{run.Seconds:F3}</td><td>{E(shards)}</td></tr>""").Append('\n');
        }

        html.Append("</tbody>\n</table>\n");
    }

    private static string E(string text) => WebUtility.HtmlEncode(text);

    private static string Ms(double seconds) => (seconds * 1000).ToString("F1", CultureInfo.InvariantCulture);

    /// <summary>Bytes in binary units, the exact count in the title.</summary>
    private static string Bytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        while (Math.Abs(value) >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        string shown = unit == 0 ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B") : string.Create(CultureInfo.InvariantCulture, $"{value:F1} {units[unit]}");
        return string.Create(CultureInfo.InvariantCulture, $"""<span title="{bytes} bytes">{shown}</span>""");
    }
}
