using Spectre.Console;

namespace LongCluster.Cli;

/// <summary>
/// A Spectre.Console console over a command's stdout. Live widgets (progress bars) only when that stdout is this
/// process's console on a terminal; otherwise — redirected to a file or a pipe, or a <see cref="TextWriter"/> a test
/// passes in — plain text: no escape codes, no colour, ASCII table borders, and no line wrapped, so logs and tests
/// read the same text every time.
/// </summary>
internal static class CliConsole
{
    /// <summary>Width of non-interactive output: wider than any line a command prints, so Spectre wraps none of them.</summary>
    private const int PlainWidth = 4096;

    /// <summary>Whether <paramref name="stdout"/> is a terminal that can show a live progress bar.</summary>
    public static bool IsInteractive(TextWriter stdout) => ReferenceEquals(stdout, Console.Out) && !Console.IsOutputRedirected;

    public static IAnsiConsole For(TextWriter stdout)
    {
        bool interactive = IsInteractive(stdout);
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = interactive ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = interactive ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = interactive ? InteractionSupport.Yes : InteractionSupport.No,
        });
        if (!interactive)
        {
            console.Profile.Width = PlainWidth;
        }

        return console;
    }

    /// <summary>
    /// A table with the given columns (a column named with a leading '>' is right-aligned, the '>' dropped): box
    /// lines on a terminal, ASCII in logs.
    /// </summary>
    public static Table Table(IAnsiConsole console, params string[] columns)
    {
        ArgumentNullException.ThrowIfNull(console);
        var table = new Table().Border(console.Profile.Capabilities.Interactive ? TableBorder.Rounded : TableBorder.Ascii);
        foreach (string column in columns)
        {
            table.AddColumn(column.StartsWith('>') ? new TableColumn(column[1..]).RightAligned() : new TableColumn(column));
        }

        return table;
    }
}
