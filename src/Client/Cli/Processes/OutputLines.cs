namespace LongCluster.Cli.Processes;

/// <summary>
/// A child process's output, line by line, that callers can await ("ready", "declared dead", "left") instead of
/// polling: a line already seen or one still to come.
/// </summary>
internal sealed class OutputLines
{
    private readonly List<string> _lines = [];
    private readonly List<(Func<string, bool> Match, TaskCompletionSource<string> Found)> _waiters = [];

    public IReadOnlyList<string> Lines
    {
        get
        {
            lock (_lines)
            {
                return [.. _lines];
            }
        }
    }

    /// <summary>The first line (already seen or still to come) that matches.</summary>
    public Task<string> WaitForLineAsync(Func<string, bool> match, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(match);
        var found = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lines)
        {
            string? seen = _lines.FirstOrDefault(match);
            if (seen is not null)
            {
                return Task.FromResult(seen);
            }

            _waiters.Add((match, found));
        }

        return found.Task.WaitAsync(timeout);
    }

    /// <summary>Takes a line (null, the end of a stream, is ignored) and completes the waiters it matches.</summary>
    public void Add(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_lines)
        {
            _lines.Add(line);
            foreach ((Func<string, bool> match, TaskCompletionSource<string> found) in _waiters.ToArray())
            {
                if (match(line))
                {
                    found.TrySetResult(line);
                    _waiters.RemoveAll(w => w.Found == found);
                }
            }
        }
    }
}
