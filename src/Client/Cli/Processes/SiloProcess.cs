using System.Diagnostics;
using System.Globalization;
using LongCluster.Service;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A silo in its own process (the <c>longcluster-silo</c> host), with its output captured line by line so callers
/// can await what it says ("ready", "declared dead", "left") instead of polling.
/// </summary>
internal sealed class SiloProcess : IDisposable
{
    private readonly Process _process;
    private readonly OutputLines _output = new();

    private SiloProcess(Process process) => _process = process;

    public IReadOnlyList<string> Lines => _output.Lines;

    /// <summary>
    /// Starts <c>dotnet <paramref name="siloAssembly"/></c> with <c>--LongCluster:Key=Value</c> for every setting, behind
    /// <paramref name="prefix"/> when one is given: a command that execs the rest in place (<c>ip netns exec NS</c>,
    /// <c>taskset -c CPUS</c>), so the process id is still the silo's own and killing it kills the silo.
    /// </summary>
    public static SiloProcess Start(string siloAssembly, IEnumerable<KeyValuePair<string, string>> settings, IReadOnlyList<string>? prefix = null)
    {
        ArgumentNullException.ThrowIfNull(siloAssembly);
        ArgumentNullException.ThrowIfNull(settings);
        prefix ??= [];
        var start = new ProcessStartInfo(prefix.Count > 0 ? prefix[0] : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string word in prefix.Skip(1))
        {
            start.ArgumentList.Add(word);
        }

        if (prefix.Count > 0)
        {
            start.ArgumentList.Add("dotnet");
        }

        start.ArgumentList.Add(siloAssembly);
        foreach ((string key, string value) in settings)
        {
            start.ArgumentList.Add($"--LongCluster:{key}={value}");
        }

        var silo = new SiloProcess(new Process { StartInfo = start });
        silo._process.OutputDataReceived += (_, e) => silo._output.Add(e.Data);
        silo._process.ErrorDataReceived += (_, e) => silo._output.Add(e.Data);
        silo._process.Start();
        silo._process.BeginOutputReadLine();
        silo._process.BeginErrorReadLine();
        return silo;
    }

    /// <summary>The silo's HTTP base URL (client API, health), known once <see cref="ReadyAsync"/> has returned.</summary>
    public Uri? HttpEndpoint { get; private set; }

    /// <summary>
    /// Waits for the host's ready line (<c>LongCluster silo ADDRESS ready; http port N</c>) and returns the silo address
    /// it names. A silo that exits first throws <see cref="SiloExitedException"/> at once (its exit code and last
    /// lines); one still silent at <paramref name="timeout"/> throws <see cref="TimeoutException"/> with its last lines.
    /// </summary>
    public async Task<string> ReadyAsync(TimeSpan timeout)
    {
        Task<string> ready = WaitForLineAsync(l => l.StartsWith(SiloHost.ReadyLine, StringComparison.Ordinal), Timeout.InfiniteTimeSpan);
        Task exited = _process.WaitForExitAsync(); // completes once the process and its output streams have ended
        Task first = await Task.WhenAny(ready, exited, Task.Delay(timeout)).ConfigureAwait(false);
        if (first != ready)
        {
            if (first == exited)
            {
                throw new SiloExitedException(_process.ExitCode, Lines);
            }

            throw new TimeoutException($"silo process {_process.Id} printed no ready line within {timeout.TotalSeconds:0} s; its last lines:{Environment.NewLine}{Tail(Lines)}");
        }

        string line = await ready.ConfigureAwait(false);
        string[] words = line.Split(' ');
        string address = words[2];
        HttpEndpoint = new Uri($"http://{address[..address.LastIndexOf(':')]}:{words[^1]}");
        return address;
    }

    /// <summary>The last of <paramref name="lines"/>, one per line, for an error message.</summary>
    internal static string Tail(IEnumerable<string> lines) => string.Join(Environment.NewLine, lines.TakeLast(20));

    /// <summary>The first output line (already seen or still to come) that matches.</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout) => _output.WaitForLineAsync(match, timeout);

    public int ProcessId => _process.Id;

    /// <summary>SIGKILL: no leave, no cleanup.</summary>
    public void Kill() => _process.Kill();

    /// <summary>SIGTERM, as Kubernetes sends before it kills a pod: the silo leaves gracefully.</summary>
    public void Terminate()
    {
        using Process kill = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }

    public async Task<int> ExitCodeAsync(TimeSpan timeout)
    {
        await _process.WaitForExitAsync().WaitAsync(timeout).ConfigureAwait(false);
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
            _process.WaitForExit();
        }

        _process.Dispose();
    }
}

/// <summary>A silo process ended before it printed its ready line.</summary>
internal sealed class SiloExitedException(int exitCode, IReadOnlyList<string> lines)
    : Exception($"the silo process exited with code {exitCode} before it was ready; its last lines:{Environment.NewLine}{SiloProcess.Tail(lines)}")
{
    public int ExitCode { get; } = exitCode;

    /// <summary>It could not listen on its port (taken by another process since the port was chosen): starting it again on another port may succeed.</summary>
    public bool PortTaken { get; } = lines.Any(l => l.Contains("Address already in use", StringComparison.Ordinal));
}
