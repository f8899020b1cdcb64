using System.Globalization;
using LongCluster.Kernels;
using LongCluster.Kernels.Backends;
using LongCluster.Kernels.Gpu;
using LongCluster.Kernels.ContextParallel;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>A usage error: the message says which option and what was expected; the CLI exits with code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The options of one command: <c>--name value</c>, <c>--name=value</c> and bare flags. Every option a command
/// reads must be declared, so a misspelled option is an error rather than silently ignored.
/// </summary>
internal sealed class CommandLine
{
    private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);
    private readonly string _command;

    private CommandLine(string command) => _command = command;

    public static CommandLine Parse(string command, IReadOnlyList<string> args, IReadOnlyCollection<string> valueOptions, IReadOnlyCollection<string> flags)
    {
        var result = new CommandLine(command);
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal))
            {
                throw new UsageException($"{command}: unexpected argument '{arg}'");
            }

            string name = arg[2..];
            string? value = null;
            int equals = name.IndexOf('=', StringComparison.Ordinal);
            if (equals >= 0)
            {
                value = name[(equals + 1)..];
                name = name[..equals];
            }

            if (flags.Contains(name))
            {
                if (value is not null)
                {
                    throw new UsageException($"{command}: --{name} takes no value");
                }
            }
            else if (valueOptions.Contains(name))
            {
                if (value is null)
                {
                    if (i + 1 >= args.Count)
                    {
                        throw new UsageException($"{command}: --{name} needs a value");
                    }

                    value = args[++i];
                }
            }
            else
            {
                string known = string.Join(", ", valueOptions.Concat(flags).Select(o => "--" + o));
                throw new UsageException($"{command}: unknown option --{name} (known: {known})");
            }

            if (!result._values.TryAdd(name, value))
            {
                throw new UsageException($"{command}: --{name} given twice");
            }
        }

        return result;
    }

    public bool Has(string name) => _values.ContainsKey(name);

    public string? Text(string name) => _values.GetValueOrDefault(name);

    /// <summary>
    /// <c>--backend cpu|ilgpu</c> (default cpu): what computes this node's kernels — the CPU SIMD kernels, or ILGPU (on
    /// CUDA where this machine has a device, else on ILGPU's CPU accelerator: the same kernels, slowly).
    /// </summary>
    public IAttentionBackend Backend()
    {
        string choice = Text("backend") ?? "cpu";
        if (choice is not ("cpu" or "ilgpu"))
        {
            throw new UsageException($"{_command}: --backend must be cpu or ilgpu, got '{choice}'");
        }

        return KernelBackends.ForProcess(choice);
    }

    /// <summary><c>--name 1,2,4</c>: a comma-separated list of at least one integer in <paramref name="minimum"/>..<paramref name="maximum"/>.</summary>
    public int[] IntList(string name, int minimum, int maximum)
    {
        string text = RequiredText(name);
        string[] parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var values = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out values[i]) || values[i] < minimum || values[i] > maximum)
            {
                throw new UsageException($"{_command}: --{name} must be a comma-separated list of integers in {minimum}..{maximum}, got '{text}'");
            }
        }

        return values.Length > 0 ? values : throw new UsageException($"{_command}: --{name} must list at least one value");
    }

    public string RequiredText(string name) =>
        Text(name) ?? throw new UsageException($"{_command}: --{name} is required");

    public int Int(string name, int defaultValue, int minimum, int maximum = int.MaxValue)
    {
        string? text = Text(name);
        if (text is null)
        {
            return defaultValue;
        }

        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) || value < minimum || value > maximum)
        {
            string range = maximum == int.MaxValue ? $">= {minimum}" : $"in {minimum}..{maximum}";
            throw new UsageException($"{_command}: --{name} must be an integer {range}, got '{text}'");
        }

        return value;
    }

    /// <summary>A storage dtype option: f32, f16 or bf16.</summary>
    public DType FloatType(string name, string defaultValue)
    {
        string text = Text(name) ?? defaultValue;
        return DTypes.TryParseFloat(text, out DType dtype)
            ? dtype
            : throw new UsageException($"{_command}: --{name} must be f32, f16 or bf16, got '{text}'");
    }

    /// <summary>The <c>--mask</c> option, or another option that names a mask.</summary>
    public AttentionMask Mask(string defaultValue, string name = "mask")
    {
        try
        {
            return AttentionMask.Parse(Text(name) ?? defaultValue);
        }
        catch (FormatException e)
        {
            throw new UsageException($"{_command}: --{name}: {e.Message}");
        }
    }

    /// <summary>The <c>--mask</c> option when it is the retrieval rule (<c>retrieval[:…]</c>), else null.</summary>
    public RetrievalRule? Retrieval()
    {
        string? text = Text("mask");
        if (!RetrievalRule.IsRetrieval(text))
        {
            return null;
        }

        try
        {
            return RetrievalRule.Parse(text!);
        }
        catch (FormatException e)
        {
            throw new UsageException($"{_command}: --mask: {e.Message}");
        }
    }

    /// <summary>The <c>--layout</c> option.</summary>
    public ContextLayout Layout(string defaultValue)
    {
        try
        {
            return ContextLayout.Parse(Text("layout") ?? defaultValue);
        }
        catch (FormatException e)
        {
            throw new UsageException($"{_command}: --layout: {e.Message}");
        }
    }

    /// <summary>The <c>--layout</c> option where the cluster may choose: <c>auto</c>, or a layout in its canonical text form.</summary>
    public string LayoutOrAuto(string defaultValue) =>
        string.Equals(Text("layout")?.Trim(), "auto", StringComparison.OrdinalIgnoreCase) ? "auto" : Layout(defaultValue).ToString();

    /// <summary><c>--hq</c> and <c>--hkv</c>, with Hq a multiple of Hkv.</summary>
    public (int QueryHeads, int KeyValueHeads) Heads(int defaultQueryHeads, int? defaultKeyValueHeads = null)
    {
        int hq = Int("hq", defaultQueryHeads, 1);
        int hkv = Int("hkv", defaultKeyValueHeads ?? hq, 1);
        return hq % hkv == 0
            ? (hq, hkv)
            : throw new UsageException($"{_command}: --hq ({hq}) must be a multiple of --hkv ({hkv})");
    }

    public float? Float(string name)
    {
        string? text = Text(name);
        if (text is null)
        {
            return null;
        }

        if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float value) || !float.IsFinite(value))
        {
            throw new UsageException($"{_command}: --{name} must be a finite number, got '{text}'");
        }

        return value;
    }
}
