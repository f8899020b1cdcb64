using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A network of its own for N silo processes on this machine: one network namespace per silo, each joined by a veth
/// pair to a bridge in this (the root) namespace, on a private /24 (10.213.X.0/24: the bridge .1, silo i .(i+2)).
/// The client and Redis use the bridge's address, so every byte between silos — and from a silo to the client —
/// crosses the veth links. Each namespace's end of its veth is shaped by tc on the way out: netem (delay and rate)
/// where the kernel has it, otherwise tbf (rate only, and <see cref="LatencyApplied"/> says the latency was not).
/// <para>
/// Names start with <see cref="Prefix"/> and the owning process id (<c>lcs1234-s0</c> namespaces, <c>lcs1234b</c>
/// bridge, <c>lcs1234h0</c>/<c>lcs1234n0</c> veth ends; interface names stay within Linux's 15 characters), so
/// <see cref="RemoveStale"/> finds what a crashed run left and removes it, and never a running harness's.
/// </para>
/// Needs root and iproute2 (<c>ip</c>, <c>tc</c>); <see cref="Create"/> throws <see cref="InvalidOperationException"/>
/// naming the command that failed, after removing whatever it had made.
/// </summary>
internal sealed partial class SiloNetwork : IDisposable
{
    public const string Prefix = "lcs";

    private readonly int _owner;
    private readonly int _subnet;
    private readonly List<string> _namespaces = [];
    private bool _bridge;

    private SiloNetwork(int owner, int subnet, LinkShape link)
    {
        _owner = owner;
        _subnet = subnet;
        Link = link;
    }

    public LinkShape Link { get; }

    /// <summary>Whether the latency of <see cref="Link"/> is applied (netem); false: tbf shapes the rate alone.</summary>
    public bool LatencyApplied { get; private set; }

    /// <summary>What shapes each link, in words (<c>netem delay 50us rate 10gbit</c>, or tbf and why).</summary>
    public string Shaping { get; private set; } = "";

    /// <summary>The bridge's address: where Redis listens and the client's packets come from.</summary>
    public string BridgeAddress => Address(1);

    public int Silos => _namespaces.Count;

    /// <summary>The name of this process's namespaces, bridge and veth ends begin with this.</summary>
    public static string OwnerPrefix(int processId) => string.Create(CultureInfo.InvariantCulture, $"{Prefix}{processId}");

    /// <summary>Namespace of silo i.</summary>
    public string Namespace(int silo) => _namespaces[silo];

    /// <summary>Address of silo i, in its namespace.</summary>
    public string SiloAddress(int silo) => Address(silo + 2);

    /// <summary>Whether this process may make namespaces (root) and iproute2 is installed; otherwise why not.</summary>
    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "network namespaces are Linux's";
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return "making network namespaces and tc qdiscs needs root";
        }

        try
        {
            Exec("ip", "-V");
            Exec("tc", "-V");
        }
        catch (Win32Exception)
        {
            return "iproute2 (ip, tc) is not installed";
        }

        return null;
    }

    /// <summary>
    /// Removes namespaces and interfaces named by this harness whose owning process is gone (a run killed before its
    /// clean-up); returns their names.
    /// </summary>
    public static IReadOnlyList<string> RemoveStale()
    {
        var removed = new List<string>();
        foreach (string name in Names(Exec("ip", "netns", "list").Output, NamespaceLine()))
        {
            if (IsStale(name))
            {
                // Silos a crashed harness left inside would keep the namespace alive, unnamed, after its deletion.
                foreach (string pid in Exec("ip", "netns", "pids", name).Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                {
                    Exec("kill", "-KILL", pid);
                    removed.Add($"process {pid} in {name}");
                }

                Exec("ip", "netns", "del", name);
                removed.Add(name);
            }
        }

        foreach (string name in Names(Exec("ip", "-o", "link", "show").Output, LinkLine()))
        {
            // A veth end goes with its pair, so one already removed may be listed still.
            if (IsStale(name) && Exec("ip", "link", "del", name).Code == 0)
            {
                removed.Add(name);
            }
        }

        return removed;
    }

    /// <summary>Namespaces and interfaces with this harness's names that a process owns (for checks that a run left nothing).</summary>
    public static IReadOnlyList<string> Owned(int processId)
    {
        return
        [
            .. Names(Exec("ip", "netns", "list").Output, NamespaceLine()).Concat(Names(Exec("ip", "-o", "link", "show").Output, LinkLine()))
                .Where(n => Owner(n) == processId),
        ];
    }

    /// <summary>Makes the bridge and <paramref name="silos"/> shaped namespaces; on a failure removes what it made and throws.</summary>
    public static SiloNetwork Create(int silos, LinkShape link)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(silos, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(silos, 99);
        ArgumentNullException.ThrowIfNull(link);
        var network = new SiloNetwork(Environment.ProcessId, FreeSubnet(), link);
        try
        {
            network.Build(silos);
            return network;
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>Removes the namespaces (their veth pairs go with them) and the bridge; failures are ignored, as there is nothing left to do about them.</summary>
    public void Dispose()
    {
        for (int i = 0; i < _namespaces.Count; i++)
        {
            // The veth pair first: deleting one end deletes both at once, where a namespace's deletion frees its
            // devices later, in the kernel's own time.
            Exec("ip", "link", "del", Interface('h', i));
            Exec("ip", "netns", "del", _namespaces[i]);
        }

        _namespaces.Clear();
        if (_bridge)
        {
            Exec("ip", "link", "del", Bridge);
            _bridge = false;
        }
    }

    private string Bridge => OwnerPrefix(_owner) + "b";

    private string Interface(char side, int silo) => string.Create(CultureInfo.InvariantCulture, $"{OwnerPrefix(_owner)}{side}{silo}");

    private string Address(int host) => string.Create(CultureInfo.InvariantCulture, $"10.213.{_subnet}.{host}");

    private void Build(int silos)
    {
        Must("ip", "link", "add", Bridge, "type", "bridge");
        _bridge = true;
        Must("ip", "addr", "add", BridgeAddress + "/24", "dev", Bridge);
        Must("ip", "link", "set", Bridge, "up");
        for (int i = 0; i < silos; i++)
        {
            string name = string.Create(CultureInfo.InvariantCulture, $"{OwnerPrefix(_owner)}-s{i}");
            Must("ip", "netns", "add", name);
            _namespaces.Add(name);
            string host = Interface('h', i);
            string inside = Interface('n', i);
            Must("ip", "link", "add", host, "type", "veth", "peer", "name", inside);
            Must("ip", "link", "set", inside, "netns", name);
            Must("ip", "link", "set", host, "master", Bridge);
            Must("ip", "link", "set", host, "up");
            Must("ip", "-n", name, "link", "set", "lo", "up");
            Must("ip", "-n", name, "addr", "add", SiloAddress(i) + "/24", "dev", inside);
            Must("ip", "-n", name, "link", "set", inside, "up");
            Shape(name, inside);
        }
    }

    /// <summary>
    /// Shapes what leaves a namespace. netem gives both delay and rate; where the kernel lacks it (CONFIG_NET_SCH_NETEM
    /// unset, as in this project's VMs), tbf gives the rate with a burst of 1 ms at that rate (at least 64 KiB, a GSO
    /// segment), and packets queue up to 100 ms before tbf drops them, as a switch's buffer would.
    /// </summary>
    private void Shape(string name, string device)
    {
        if (Exec("tc", "-n", name, "qdisc", "add", "dev", device, "root", "netem", "delay", Link.TcLatency, "rate", Link.TcRate, "limit", "100000").Code == 0)
        {
            LatencyApplied = true;
            Shaping = $"netem delay {Link.LatencyText} rate {Link.RateText}";
            return;
        }

        long burst = Math.Max(64 * 1024, (long)(Link.BitsPerSecond / 8 / 1000));
        Must("tc", "-n", name, "qdisc", "add", "dev", device, "root", "tbf", "rate", Link.TcRate, "burst", burst.ToString(CultureInfo.InvariantCulture), "latency", "100ms");
        LatencyApplied = Link.LatencyMicroseconds == 0;
        Shaping = LatencyApplied
            ? $"tbf rate {Link.RateText}"
            : $"tbf rate {Link.RateText}; latency {Link.LatencyText} NOT applied: this kernel has no netem qdisc (sch_netem), and no other qdisc delays packets";
    }

    /// <summary>A /24 under 10.213.0.0/16 that no interface of this namespace uses yet.</summary>
    private static int FreeSubnet()
    {
        string used = Exec("ip", "-o", "-4", "addr", "show").Output;
        for (int i = 0; i < 256; i++)
        {
            int subnet = (Environment.ProcessId + i) % 256;
            if (!used.Contains(string.Create(CultureInfo.InvariantCulture, $" 10.213.{subnet}."), StringComparison.Ordinal))
            {
                return subnet;
            }
        }

        throw new InvalidOperationException("every /24 of 10.213.0.0/16 is in use on this machine");
    }

    private static bool IsStale(string name) => Owner(name) is int owner && owner != Environment.ProcessId && !Directory.Exists($"/proc/{owner}");

    /// <summary>The process id in a name this harness gave (<c>lcs1234-s0</c>, <c>lcs1234b</c>, <c>lcs1234h0</c>), or null for any other name.</summary>
    private static int? Owner(string name)
    {
        Match match = OwnedName().Match(name);
        return match.Success && int.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int owner) ? owner : null;
    }

    private static IEnumerable<string> Names(string listing, Regex line) =>
        listing.Split('\n').Select(l => line.Match(l)).Where(m => m.Success).Select(m => m.Groups["name"].Value).Where(n => Owner(n) is not null).Distinct();

    private static void Must(string file, params string[] arguments)
    {
        (int code, string output) = Exec(file, arguments);
        if (code != 0)
        {
            throw new InvalidOperationException($"'{file} {string.Join(' ', arguments)}' failed (exit {code}): {output.Trim()}");
        }
    }

    private static (int Code, string Output) Exec(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, output.GetAwaiter().GetResult() + error.GetAwaiter().GetResult());
    }

    [GeneratedRegex(@"^lcs(\d+)(b|[hn]\d+|-s\d+)$", RegexOptions.CultureInvariant)]
    private static partial Regex OwnedName();

    /// <summary>A line of <c>ip netns list</c>: <c>NAME</c> or <c>NAME (id: 3)</c>.</summary>
    [GeneratedRegex(@"^(?<name>\S+)", RegexOptions.CultureInvariant)]
    private static partial Regex NamespaceLine();

    /// <summary>A line of <c>ip -o link show</c>: <c>7: NAME@if6: &lt;...</c>.</summary>
    [GeneratedRegex(@"^\d+:\s+(?<name>[^:@\s]+)", RegexOptions.CultureInvariant)]
    private static partial Regex LinkLine();
}
