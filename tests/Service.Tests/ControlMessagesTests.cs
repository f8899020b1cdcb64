using System.Text.Json;
using LongCluster.Contracts;
using LongCluster.Grains.Diagnostics;

namespace LongCluster.Service.Tests;

/// <summary>Every control contract survives the shared MessagePack form with every value intact.</summary>
public sealed class ControlMessagesTests
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    private static readonly SequenceSpec Spec = new() { Layers = 3, QueryHeads = 12, KeyValueHeads = 4, HeadDim = 64, DType = "bf16", Layout = "hybrid:2", Shards = 4, Mask = "window:9" };

    private static readonly ShardInfo[] Shards = [new(0, "http://127.0.0.1:5001/", "127.0.0.1:11111@1", 100, 1 << 20), new(1, "http://127.0.0.1:5002/", "127.0.0.1:11112@2", 0, 0)];

    private static readonly SequenceInfo Info = new("seq-1", Spec, SequenceState.Degraded, 1L << 33, 2, Shards, new ChunkProgress(3, 96, 32, 1), 2, "shard 1 lost its KV", "127.0.0.1:11111@1", "http://127.0.0.1:5001");

    public static TheoryData<string, object> Contracts() => new()
    {
        { "SequenceSpec", Spec },
        { "SequenceSpec defaults", new SequenceSpec() },
        { "ChunkRequest", new ChunkRequest(101, [0, 0, 1, int.MaxValue]) },
        { "ChunkRequest without documents", new ChunkRequest(7) },
        { "SequenceInfo", Info },
        { "SequenceInfo without chunk, problem or coordinator", new SequenceInfo("s", new SequenceSpec(), SequenceState.Created, 0, 0, [], null, 0, null) },
        { "SequenceInfo of layout auto", Info with { Spec = Spec with { Layout = "contiguous", AutoChunkTokens = 32768 }, LayoutChosen = "contiguous", PredictedLayerMs = 12.375 } },
        { "SequenceInfo list", new List<SequenceInfo> { Info, Info with { Id = "seq-2", State = SequenceState.Ready } } },
        { "ChunkPlan", new ChunkPlan("seq-1", 2, 64, 40, [new ShardRows(0, "http://a:1/", 20, [0, 10, 30, 10]), new ShardRows(1, "http://b:2/", 20, [10, 20])]) },
        { "LayerRunResult", new LayerRunResult(1, 2, 0.125, [new ShardTimings(0, 0.5, 1.25, 1e-9, 0, double.Epsilon, long.MaxValue)], Info) },
        { "TransferFigures", new TransferFigures("a", "b", 64, 16 << 20, 2.5, 0.43, 20000, 76.5, 302.25) },
        { "ApiError", new ApiError("expected 1..1024, got 0", "layers", false, "invalid_request") },
    };

    [Theory]
    [MemberData(nameof(Contracts))]
    public void MessagePack_RoundTrip_EqualValues(string what, object contract)
    {
        Type type = contract.GetType();
        byte[] bytes = ControlMessages.ToMessagePack(type, contract);
        object back = ControlMessages.FromMessagePack(type, bytes)!;

        Assert.IsType(type, back);
        // Equal as values all the way down (records compare lists by reference): their JSON forms match.
        Assert.Equal(JsonSerializer.Serialize(contract, type, Json), JsonSerializer.Serialize(back, type, Json));
        Assert.True(bytes.Length < JsonSerializer.SerializeToUtf8Bytes(contract, type, Json).Length, $"{what}: MessagePack {bytes.Length} bytes is not smaller than JSON");
    }

    [Fact]
    public void IsMessagePack_MediaTypes_OnlyMessagePack()
    {
        Assert.True(ControlMessages.IsMessagePack("application/x-msgpack"));
        Assert.True(ControlMessages.IsMessagePack("Application/X-MsgPack"));
        Assert.False(ControlMessages.IsMessagePack("application/json"));
        Assert.False(ControlMessages.IsMessagePack(null));
    }
}
