namespace LongCluster.Kernels.Planning;

/// <summary>A hardware profile that cannot be used: <see cref="Field"/> names the JSON field at fault ("" for the whole file).</summary>
public sealed class HardwareProfileException : Exception
{
    public HardwareProfileException(string source, string field, string problem)
        : base(field.Length == 0 ? $"profile {source}: {problem}" : $"profile {source}: field '{field}': {problem}")
    {
        ProfileSource = source;
        Field = field;
    }

    /// <summary>The file (or built-in profile) read.</summary>
    public string ProfileSource { get; }

    /// <summary>The JSON field at fault, or "" when the file as a whole is.</summary>
    public string Field { get; }
}
