using System.Globalization;

namespace LongCluster.Grains.Placement;

/// <summary>
/// The grain key of one shard: <c>sequence~epoch/index/count</c>. The epoch tells incarnations of one sequence id
/// apart, so a shard of a deleted sequence is never mistaken for one of its successor.
/// </summary>
internal readonly record struct ShardKey(string Sequence, string Epoch, int Index, int Count)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Sequence}~{Epoch}/{Index}/{Count}");

    public static ShardKey Parse(string key)
    {
        int tilde = key.LastIndexOf('~');
        string[] parts = tilde < 0 ? [] : key[(tilde + 1)..].Split('/');
        if (parts.Length != 3
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int index)
            || !int.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out int count)
            || index >= count)
        {
            throw new ArgumentException($"'{key}' is not a shard key (sequence~epoch/index/count)", nameof(key));
        }

        return new ShardKey(key[..tilde], parts[0], index, count);
    }
}
