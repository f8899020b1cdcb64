using System.Diagnostics;

namespace LongCluster.Deploy.Tests;

/// <summary>What a finished child process said.</summary>
internal sealed record ProcessResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n{Stderr}\n{Stdout}";
}

internal static class ProcessRunner
{
    /// <summary>Runs <paramref name="file"/> with <paramref name="arguments"/> in the repository root; kills it past <paramref name="timeout"/>.</summary>
    public static async Task<ProcessResult> RunAsync(string file, IEnumerable<string> arguments, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(file)
        {
            WorkingDirectory = Repository.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach ((string key, string value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using Process process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cancel.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', start.ArgumentList)} ran past {timeout}");
        }

        return new ProcessResult(process.ExitCode, await stdout, await stderr);
    }
}
