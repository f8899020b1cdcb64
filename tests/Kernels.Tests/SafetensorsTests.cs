using System.Buffers.Binary;
using System.Text;
using LongCluster.Tensors;

namespace LongCluster.Kernels.Tests;

public sealed class SafetensorsTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("lc-safetensors-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void WriteThenRead_EveryDtype_RoundTripsBitForBit()
    {
        var tensors = new Dictionary<string, HostTensor>
        {
            ["f32"] = HostTensor.From<float>([1.5f, -2f, float.NegativeInfinity, 3e-38f, 7f, 8f], 2, 3),
            ["f16"] = HostTensor.From<Half>([(Half)1.5f, (Half)(-0.25f)], 2),
            ["bf16"] = HostTensor.From<BFloat16>([(BFloat16)3.140625f, (BFloat16)(-1e30f), (BFloat16)0f], 3, 1),
            ["i32"] = HostTensor.From<int>([1, -2, int.MaxValue], 3),
            ["i64"] = HostTensor.From<long>([long.MinValue, 0], 2),
            ["empty"] = HostTensor.From<float>([], 0, 4),
        };
        string path = Path.Combine(_directory, "all.safetensors");
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });

        using SafetensorsReader reader = SafetensorsReader.Open(path);
        Assert.Equal("pt", reader.Metadata["format"]);
        foreach ((string name, HostTensor expected) in tensors)
        {
            HostTensor actual = reader.Read(name);
            Assert.Equal(expected.DType, actual.DType);
            Assert.Equal(expected.Shape, actual.Shape);
            Assert.Equal(expected.Data, actual.Data);
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path));
        Assert.Equal(0ul, headerLength % 8);
    }

    [Fact]
    public void BFloat16_RoundsToNearestEven()
    {
        Assert.Equal(0x3F80, ((BFloat16)1.0f).Bits);
        Assert.Equal(0x3F80, ((BFloat16)BitConverter.UInt32BitsToSingle(0x3F808000)).Bits); // tie, even stays
        Assert.Equal(0x3F82, ((BFloat16)BitConverter.UInt32BitsToSingle(0x3F818000)).Bits); // tie, odd rounds up
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));
    }

    [Fact]
    public void Open_FileShorterThanLengthPrefix_SaysTruncated()
    {
        string path = Write([1, 2, 3]);
        Assert.Contains("truncated: 3 bytes", Assert.Throws<SafetensorsException>(() => SafetensorsReader.Open(path)).Message);
    }

    [Fact]
    public void Open_HeaderLengthPastEnd_SaysTruncated()
    {
        string path = Write(Prefix(500).Concat(Encoding.UTF8.GetBytes("{}")).ToArray());
        Assert.Contains("header says 500 bytes of JSON, but only 2 bytes follow", Assert.Throws<SafetensorsException>(() => SafetensorsReader.Open(path)).Message);
    }

    [Fact]
    public void Open_HugeHeaderLength_RefusedBeforeAllocating()
    {
        string path = Write(Prefix(ulong.MaxValue));
        Assert.Contains("over the limit", Assert.Throws<SafetensorsException>(() => SafetensorsReader.Open(path)).Message);
    }

    [Theory]
    [InlineData("not json", "not valid JSON")]
    [InlineData("[1,2]", "must be a JSON object")]
    [InlineData("{\"q\": 5}", "entry must be an object")]
    [InlineData("{\"q\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", "dtype 'F64' is not supported")]
    [InlineData("{\"q\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "non-negative integers")]
    [InlineData("{\"q\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", "needs 12 bytes")]
    [InlineData("{\"q\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", "run past the end of the data")]
    [InlineData("{\"q\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", "end before they begin")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "overlap")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "appears twice")]
    [InlineData("{\"q\": {\"dtype\": \"F32\", \"shape\": [1]}}", "data_offsets")]
    [InlineData("{\"__metadata__\": {\"x\": 1}}", "must be a string")]
    public void Open_MalformedHeader_SaysWhatIsWrong(string header, string expected)
    {
        // 8 bytes of data follow every header.
        byte[] json = Encoding.UTF8.GetBytes(header);
        string path = Write([.. Prefix((ulong)json.Length), .. json, .. new byte[8]]);
        var error = Assert.Throws<SafetensorsException>(() => SafetensorsReader.Open(path));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void Open_ValidFileCutShort_EveryCutIsRefusedNotMisread()
    {
        var tensors = new Dictionary<string, HostTensor>
        {
            ["q"] = HostTensor.From<float>(TestData.Random(1, 24), 2, 3, 4),
            ["doc_ids"] = HostTensor.From<int>([0, 1], 2),
        };
        byte[] whole = SafetensorsWriter.ToBytes(tensors);
        for (int length = 0; length < whole.Length; length++)
        {
            int cut = length;
            Assert.Throws<SafetensorsException>(() =>
            {
                using SafetensorsReader reader = SafetensorsReader.FromBytes(whole.AsMemory(0, cut));
                reader.Read("q");
                reader.Read("doc_ids");
            });
        }
    }

    [Fact]
    public void Read_WrongDtypeOrRankForName_SaysExpected()
    {
        byte[] file = SafetensorsWriter.ToBytes(new Dictionary<string, HostTensor> { ["q"] = HostTensor.From<int>([1, 2], 2) });
        using SafetensorsReader reader = SafetensorsReader.FromBytes(file);
        Assert.Contains("tensor 'q' has dtype I32, expected F32 or F16 or BF16", Assert.Throws<SafetensorsException>(() => reader.Read("q", 3, DType.F32, DType.F16, DType.BF16)).Message);
        Assert.Contains("has shape [2] (1 dimensions), expected 3 dimensions", Assert.Throws<SafetensorsException>(() => reader.Read("q", 3, DType.I32)).Message);
        Assert.Contains("no tensor named 'k'", Assert.Throws<SafetensorsException>(() => reader.Read("k")).Message);
    }

    [Fact]
    public void Open_RandomBytes_NeverThrowsAnythingElse()
    {
        var random = new Random(3);
        for (int i = 0; i < 2000; i++)
        {
            byte[] bytes = new byte[random.Next(0, 64)];
            random.NextBytes(bytes);
            if (bytes.Length >= 8 && i % 2 == 0)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)random.Next(0, bytes.Length - 7));
            }

            try
            {
                using SafetensorsReader reader = SafetensorsReader.FromBytes(bytes);
                foreach (string name in reader.Entries.Keys)
                {
                    reader.Read(name);
                }
            }
            catch (SafetensorsException)
            {
            }
        }
    }

    private string Write(byte[] bytes)
    {
        string path = Path.Combine(_directory, Guid.NewGuid().ToString("N") + ".safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Prefix(ulong length)
    {
        var prefix = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, length);
        return prefix;
    }
}
