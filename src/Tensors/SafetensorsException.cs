namespace LongCluster.Tensors;

/// <summary>A safetensors file or body that is malformed or does not hold what the caller asked for.</summary>
public sealed class SafetensorsException : Exception
{
    public SafetensorsException(string message)
        : base(message)
    {
    }

    public SafetensorsException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
