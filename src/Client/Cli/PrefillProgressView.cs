using System.Globalization;
using LongCluster.Client;
using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// Shows a prefill's progress: a Spectre.Console progress bar on a terminal; a line per layer phase otherwise (logs,
/// tests), with no escape codes.
/// </summary>
internal sealed class PrefillProgressView : IProgress<PrefillProgress>
{
    private readonly IAnsiConsole _console;
    private readonly ProgressTask? _bar;
    private readonly int _layers;
    private readonly Lock _lock = new();

    private PrefillProgressView(IAnsiConsole console, ProgressTask? bar, int layers)
    {
        _console = console;
        _bar = bar;
        _layers = layers;
    }

    /// <summary>Runs <paramref name="work"/> (a prefill of <paramref name="layers"/> layers) under a progress view.</summary>
    public static Task<T> ShowAsync<T>(IAnsiConsole console, bool interactive, int layers, Func<IProgress<PrefillProgress>, Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(console);
        ArgumentNullException.ThrowIfNull(work);
        if (!interactive)
        {
            return work(new PrefillProgressView(console, null, layers));
        }

        return console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(progress => work(new PrefillProgressView(console, progress.AddTask("prefill", maxValue: layers), layers)));
    }

    public void Report(PrefillProgress value)
    {
        ArgumentNullException.ThrowIfNull(value);
        double within = value.Phase switch
        {
            "upload" => value.BytesTotal == 0 ? 0 : 0.1 * value.BytesUploaded / value.BytesTotal,
            "run" => 0.1,
            _ => 0.95,
        };
        string text = string.Create(CultureInfo.InvariantCulture,
            $"layer {value.Layer + 1}/{_layers} {value.Phase}{(value.Phase == "upload" ? $" {value.BytesUploaded / 1e6:F0}/{value.BytesTotal / 1e6:F0} MB" : "")}");
        lock (_lock)
        {
            if (_bar is not null)
            {
                _bar.Value = value.Layer + within;
                _bar.Description = Markup.Escape(text);
            }
            else if (value.Phase != "upload" || value.BytesUploaded == value.BytesTotal)
            {
                _console.WriteLine($"  prefill {text}");
            }
        }
    }
}
