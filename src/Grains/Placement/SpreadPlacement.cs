using Orleans.Placement;

namespace LongCluster.Grains.Placement;

/// <summary>
/// Places shard <c>i</c> of <c>P</c> of a sequence on a different silo from its neighbours: the shards of one sequence
/// go round the active silos (sorted by address) starting at an offset taken from the sequence id, so P shards on
/// N silos land ⌈P/N⌉ or ⌊P/N⌋ to a silo, and different sequences start on different silos.
/// </summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
public sealed class SpreadPlacement : PlacementStrategy
{
    internal static readonly SpreadPlacement Instance = new();
}

/// <summary>Puts a grain class's activations where <see cref="SpreadPlacement"/> says.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SpreadPlacementAttribute() : PlacementAttribute(SpreadPlacement.Instance);
