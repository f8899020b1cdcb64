using System.Diagnostics;
using LongCluster.Client;

namespace LongCluster.Cli;

/// <summary>
/// What <c>bench load</c>'s clients did, shared by all of them: every operation's latency, every failure by its code,
/// every answer that differed from the single-node kernel. Thread-safe.
/// </summary>
internal sealed class LoadStats
{
    /// <summary>Failures and wrong answers kept with their text, to print (the counts keep counting past it).</summary>
    private const int KeptExamples = 20;

    private readonly Lock _lock = new();
    private readonly Dictionary<string, List<double>> _seconds = new(StringComparer.Ordinal);
    private readonly SortedDictionary<string, int> _failures = new(StringComparer.Ordinal);
    private readonly List<string> _errorExamples = [];
    private readonly List<string> _wrongExamples = [];
    private long _requests;
    private long _errors;
    private long _refused;
    private long _wrong;
    private long _checked;
    private long _sequences;

    public long Requests => Interlocked.Read(ref _requests);

    public long Errors => Interlocked.Read(ref _errors);

    public long Refused => Interlocked.Read(ref _refused);

    public long Wrong => Interlocked.Read(ref _wrong);

    /// <summary>Outputs compared with the kernel (a layer of a chunk, or a layer of a decode step).</summary>
    public long Checked => Interlocked.Read(ref _checked);

    /// <summary>Sequences that went through create, prefill, decode and delete without a failure.</summary>
    public long Sequences => Interlocked.Read(ref _sequences);

    /// <summary>
    /// Runs one operation and records its latency, or its failure (then throws <see cref="LoadFailure"/> so the
    /// client gives up the sequence). Cancellation by <paramref name="stop"/> is neither.
    /// </summary>
    public async Task<T> TimeAsync<T>(string op, string sequence, Func<Task<T>> call, CancellationToken stop)
    {
        long started = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _requests);
        try
        {
            T result = await call().ConfigureAwait(false);
            double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            lock (_lock)
            {
                if (!_seconds.TryGetValue(op, out List<double>? list))
                {
                    _seconds[op] = list = [];
                }

                list.Add(seconds);
            }

            return result;
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            throw;
        }
        catch (LongClusterException e)
        {
            (string code, bool refused) = Classify(e);
            Fail(code, refused, $"{op} of {sequence}: {code}: {e.Message}");
            throw new LoadFailure(e);
        }
        catch (Exception e) when (e is not LoadFailure)
        {
            string code = $"client {e.GetType().Name}";
            Fail(code, false, $"{op} of {sequence}: {code}: {e.Message}");
            throw new LoadFailure(e);
        }
    }

    public Task TimeAsync(string op, string sequence, Func<Task> call, CancellationToken stop) =>
        TimeAsync(op, sequence, async () =>
        {
            await call().ConfigureAwait(false);
            return true;
        }, stop);

    /// <summary>Compares an output with the kernel's; an error above <paramref name="tolerance"/> is a wrong answer, kept with what differed.</summary>
    public bool Check(string what, ReadOnlySpan<float> expectedO, ReadOnlySpan<float> actualO, ReadOnlySpan<float> expectedLse, ReadOnlySpan<float> actualLse, double tolerance)
    {
        Interlocked.Increment(ref _checked);
        if (expectedO.Length != actualO.Length || expectedLse.Length != actualLse.Length)
        {
            AddWrong($"{what}: {actualO.Length} O and {actualLse.Length} LSE values, expected {expectedO.Length} and {expectedLse.Length}");
            return false;
        }

        double errorO = DemoCommand.Error(expectedO, actualO);
        double errorL = DemoCommand.Error(expectedLse, actualLse, floor: 1);
        if (errorO <= tolerance && errorL <= tolerance)
        {
            return true;
        }

        AddWrong(FormattableString.Invariant($"{what}: O rel error {errorO:E2}, LSE rel error {errorL:E2} (tolerance {tolerance:E0})"));
        return false;
    }

    /// <summary>A wrong answer other than the numbers (a decode step given the wrong position, say).</summary>
    public void AddWrong(string what)
    {
        Interlocked.Increment(ref _wrong);
        lock (_lock)
        {
            if (_wrongExamples.Count < KeptExamples)
            {
                _wrongExamples.Add(what);
            }
        }
    }

    public void SequenceDone() => Interlocked.Increment(ref _sequences);

    /// <summary>Count, p50 and p99 (nearest rank) in milliseconds of every operation that succeeded, by name.</summary>
    public SortedDictionary<string, (int Count, double P50Ms, double P99Ms)> Latencies()
    {
        var result = new SortedDictionary<string, (int, double, double)>(StringComparer.Ordinal);
        lock (_lock)
        {
            foreach ((string op, List<double> seconds) in _seconds)
            {
                double[] sorted = [.. seconds.Order()];
                result[op] = (sorted.Length, Percentile(sorted, 0.50) * 1000, Percentile(sorted, 0.99) * 1000);
            }
        }

        return result;
    }

    public SortedDictionary<string, int> FailuresByCode()
    {
        lock (_lock)
        {
            return new SortedDictionary<string, int>(_failures, StringComparer.Ordinal);
        }
    }

    public IReadOnlyList<string> ErrorExamples()
    {
        lock (_lock)
        {
            return [.. _errorExamples];
        }
    }

    public IReadOnlyList<string> WrongExamples()
    {
        lock (_lock)
        {
            return [.. _wrongExamples];
        }
    }

    /// <summary>
    /// The key a failure is counted under (status and code, or what broke when no silo answered) and whether it is a
    /// refusal by a limit (429) rather than an error. Any other 4xx is an error: the load sends only valid requests.
    /// </summary>
    internal static (string Code, bool Refused) Classify(LongClusterException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        return e.Status switch
        {
            429 => ($"429 {e.Code}", true),
            0 when e.InnerException is OperationCanceledException => ("timeout", false),
            0 when e.InnerException is HttpRequestException => ("connection", false),
            _ => ($"{e.Status} {e.Code}", false),
        };
    }

    /// <summary>Nearest rank: the smallest value with at least a fraction <paramref name="p"/> of the values at or below it.</summary>
    internal static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    private void Fail(string code, bool refused, string example)
    {
        Interlocked.Increment(ref refused ? ref _refused : ref _errors);
        lock (_lock)
        {
            _failures[code] = _failures.GetValueOrDefault(code) + 1;
            if (!refused && _errorExamples.Count < KeptExamples)
            {
                _errorExamples.Add(example);
            }
        }
    }
}
