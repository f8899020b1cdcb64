using System.Diagnostics;

namespace LongCluster.Cli;

/// <summary>Times a benchmark body: one warm-up run (JIT, first touch of memory), then <c>repeat</c> timed runs.</summary>
internal static class BenchTimer
{
    /// <summary>The timed runs' seconds, fastest first.</summary>
    public static double[] Measure(int repeat, Action run)
    {
        run();
        var seconds = new double[repeat];
        for (int i = 0; i < repeat; i++)
        {
            long started = Stopwatch.GetTimestamp();
            run();
            seconds[i] = Stopwatch.GetElapsedTime(started).TotalSeconds;
        }

        Array.Sort(seconds);
        return seconds;
    }

    public static double Median(double[] sorted) => sorted[sorted.Length / 2];
}
