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
            seconds[i] = Time(run);
        }

        Array.Sort(seconds);
        return seconds;
    }

    /// <summary>
    /// Times two bodies in alternating calls (first, second; then second, first; …) after one warm-up each, so both
    /// see the same stretches of a shared machine: their ratio is steadier than that of two runs one after the other.
    /// Each body's seconds, fastest first.
    /// </summary>
    public static (double[] First, double[] Second) MeasureAlternating(int repeat, Action first, Action second)
    {
        first();
        second();
        var a = new double[repeat];
        var b = new double[repeat];
        for (int i = 0; i < repeat; i++)
        {
            if (i % 2 == 0)
            {
                a[i] = Time(first);
                b[i] = Time(second);
            }
            else
            {
                b[i] = Time(second);
                a[i] = Time(first);
            }
        }

        Array.Sort(a);
        Array.Sort(b);
        return (a, b);
    }

    private static double Time(Action run)
    {
        long started = Stopwatch.GetTimestamp();
        run();
        return Stopwatch.GetElapsedTime(started).TotalSeconds;
    }

    public static double Median(double[] sorted) => sorted[sorted.Length / 2];
}
