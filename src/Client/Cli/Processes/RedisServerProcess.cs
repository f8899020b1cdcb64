using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace LongCluster.Cli.Processes;

/// <summary>
/// A real redis-server (Debian's package <c>redis-server</c>; the test command installs it) on a free port of loopback
/// (or of another local address, for silos in network namespaces), in its own temporary directory, without persistence: the Redis of a local multi-process cluster and of the
/// cluster tests. Start and restart wait for the server's own "Ready to accept connections" line, not a poll.
/// </summary>
internal sealed class RedisServerProcess : IAsyncDisposable
{
    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("lc-redis-").FullName;
    private readonly List<string> _arguments;
    private Process? _process;

    private RedisServerProcess(string host, int port, List<string> arguments)
    {
        Host = host;
        Port = port;
        _arguments = arguments;
    }

    /// <summary>The one address the server listens on.</summary>
    public string Host { get; }

    public int Port { get; }

    /// <summary>The StackExchange.Redis configuration string of this server.</summary>
    public string Endpoint => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{Host}:{Port}");

    public string Directory => _directory;

    public int ProcessId => _process?.Id ?? 0;

    /// <param name="host">
    /// Address to listen on, loopback by default. Another one (a bridge to network namespaces) turns Redis' protected
    /// mode off, which would refuse every client not on loopback while no password is set: bound to that one address,
    /// only the namespaces on the bridge reach it.
    /// </param>
    public static async Task<RedisServerProcess> StartAsync(string? password = null, bool tls = false, string? certificate = null, string? key = null, string host = "127.0.0.1")
    {
        int port = FreePort();
        var arguments = new List<string> { "--bind", host, "--save", "", "--appendonly", "no" };
        if (!IPAddress.IsLoopback(IPAddress.Parse(host)))
        {
            arguments.AddRange(["--protected-mode", "no"]);
        }

        if (tls)
        {
            arguments.AddRange(["--port", "0", "--tls-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--tls-cert-file", certificate!, "--tls-key-file", key!, "--tls-ca-cert-file", certificate!, "--tls-auth-clients", "no"]);
        }
        else
        {
            arguments.AddRange(["--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        }

        if (password is not null)
        {
            arguments.AddRange(["--requirepass", password]);
        }

        var server = new RedisServerProcess(host, port, arguments);
        await server.RunAsync();
        return server;
    }

    /// <summary>SIGKILL: the server vanishes without closing anything cleanly.</summary>
    public async Task KillAsync()
    {
        if (_process is { HasExited: false })
        {
            _process.Kill();
            await _process.WaitForExitAsync();
        }
    }

    public Task RestartAsync() => RunAsync();

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process?.Dispose();
        System.IO.Directory.Delete(_directory, recursive: true);
    }

    private async Task RunAsync()
    {
        var start = new ProcessStartInfo("redis-server") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _directory };
        start.ArgumentList.Add("--dir");
        start.ArgumentList.Add(_directory);
        foreach (string argument in _arguments)
        {
            start.ArgumentList.Add(argument);
        }

        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var output = new System.Text.StringBuilder();
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException("redis-server is not installed (Debian package redis-server; ./test.sh installs it with apt-get)", e);
        }

        process.OutputDataReceived += (_, line) =>
        {
            lock (output)
            {
                output.AppendLine(line.Data);
            }

            if (line.Data?.Contains("Ready to accept connections", StringComparison.Ordinal) == true)
            {
                ready.TrySetResult();
            }
        };
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => ready.TrySetException(new InvalidOperationException($"redis-server exited before it was ready:\n{output}"));
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process?.Dispose();
        _process = process;
        await ready.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    internal static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }
}
