using System.Buffers.Binary;
using System.Text;
using LongCluster.Tensors;
using LongCluster.Testing;

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
            Assert.Equal(expected.Data.ToArray(), actual.Data.ToArray());
        }

        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path));
        Assert.Equal(0ul, headerLength % 8);
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.F16)]
    [InlineData(DType.BF16)]
    public void FirstNonFinite_FindsTheFirstNaNOrInfinity_AtEveryPositionAroundVectorEdges(DType dtype)
    {
        // The largest finite magnitudes of each dtype, which share all but one exponent bit with infinity.
        float largest = dtype switch { DType.F32 => float.MaxValue, DType.F16 => 65504f, _ => BitConverter.UInt32BitsToSingle(0x7F7F0000) };
        foreach (int length in new[] { 0, 1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000 })
        {
            var values = new float[length];
            for (int i = 0; i < length; i++)
            {
                values[i] = i % 2 == 0 ? largest : -largest;
            }

            Assert.Equal(-1, Encode(dtype, values).DType.FirstNonFinite(Encode(dtype, values).Data.Span));
            foreach (int bad in new[] { 0, length / 2, length - 1 }.Where(b => b >= 0 && b < length).Distinct())
            {
                foreach (float special in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
                {
                    float[] copy = [.. values];
                    copy[bad] = special;
                    if (bad + 3 < length)
                    {
                        copy[bad + 3] = float.NaN; // only the first counts
                    }

                    HostTensor tensor = Encode(dtype, copy);
                    Assert.Equal(bad, tensor.DType.FirstNonFinite(tensor.Data.Span));
                }
            }
        }

        Assert.Equal(-1, DType.I32.FirstNonFinite(HostTensor.From<int>([-1, int.MaxValue], 2).Data.Span));

        static HostTensor Encode(DType dtype, float[] values) => dtype switch
        {
            DType.F32 => HostTensor.From<float>(values, values.Length),
            DType.F16 => HostTensor.From<Half>([.. values.Select(x => (Half)x)], values.Length),
            _ => HostTensor.From<BFloat16>([.. values.Select(x => (BFloat16)x)], values.Length),
        };
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
    public async Task Open_MalformedHeader_SaysWhatIsWrong(string header, string expected)
    {
        // 8 bytes of data follow every header.
        byte[] json = Encoding.UTF8.GetBytes(header);
        byte[] file = [.. Prefix((ulong)json.Length), .. json, .. new byte[8]];
        string path = Write(file);
        var error = Assert.Throws<SafetensorsException>(() => SafetensorsReader.Open(path));
        Assert.Contains(expected, error.Message);

        // The same header read from a body, its length known or not: refused the same way, before any data is read;
        // a tensor past the end of a body of unknown length is found when the data runs out.
        foreach (long? length in new long?[] { file.Length, null })
        {
            var streamed = await Assert.ThrowsAsync<SafetensorsException>(async () =>
            {
                SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(file, 3), length);
                Assert.Null(length);
                await reader.ReadAllAsync();
            });
            Assert.Contains(length is null && expected == "run past the end of the data" ? "truncated: the data ended at byte 8, 8 bytes short of byte 16" : expected, streamed.Message);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4096)]
    public async Task StreamReader_EveryDtype_RoundTripsBitForBit_WhateverPiecesTheStreamGives(int piece)
    {
        var tensors = new Dictionary<string, HostTensor>
        {
            ["f32"] = HostTensor.From<float>(TestData.Random(2, 300), 3, 100),
            ["empty"] = HostTensor.From<float>([], 0, 4),
            ["f16"] = HostTensor.From<Half>([(Half)1.5f, (Half)(-0.25f)], 2),
            ["bf16"] = HostTensor.From<BFloat16>([(BFloat16)3.140625f, (BFloat16)(-1e30f), (BFloat16)0f], 3, 1),
            ["i64"] = HostTensor.From<long>([long.MinValue, 0], 2),
        };
        var metadata = new Dictionary<string, string> { ["position"] = "7" };
        using var written = new MemoryStream();
        SafetensorsBody body = SafetensorsWriter.Body(tensors, metadata);
        await body.WriteAsync(written);
        byte[] file = written.ToArray();
        Assert.Equal(SafetensorsWriter.ToBytes(tensors, metadata), file);
        Assert.Equal(file.Length, body.Length);

        foreach (long? length in new long?[] { file.Length, null })
        {
            SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(file, piece), length);
            Assert.Equal("7", reader.Metadata["position"]);
            Dictionary<string, HostTensor> read = await reader.ReadAllAsync();
            Assert.Equal(tensors.Keys.Order(), read.Keys.Order());
            foreach ((string name, HostTensor expected) in tensors)
            {
                Assert.Equal(expected.DType, read[name].DType);
                Assert.Equal(expected.Shape, read[name].Shape);
                Assert.Equal(expected.Data.ToArray(), read[name].Data.ToArray());
            }
        }
    }

    [Fact]
    public async Task StreamReader_GapsBetweenTensors_SkippedAndTensorsFoundByOffsetNotHeaderOrder()
    {
        // "b" is named first but lies after "a", with 4 bytes of gap before it and after it.
        byte[] json = Encoding.UTF8.GetBytes("{\"b\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [12, 16]}, \"a\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}");
        byte[] data = [1, 0, 0, 0, 2, 0, 0, 0, 9, 9, 9, 9, 3, 0, 0, 0, 9, 9, 9, 9];
        byte[] file = [.. Prefix((ulong)json.Length), .. json, .. data];

        SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(file, 5), file.Length);
        Assert.Equal(["a", "b"], reader.InDataOrder().Select(e => e.Name));
        Dictionary<string, HostTensor> read = await reader.ReadAllAsync();
        Assert.Equal([1, 2], read["a"].AsSpan<int>().ToArray());
        Assert.Equal([3], read["b"].AsSpan<int>().ToArray());
    }

    [Fact]
    public async Task StreamReader_ReadsForwardOnly_AndSaysWhereAShortBodyEnded()
    {
        byte[] file = SafetensorsWriter.ToBytes(new Dictionary<string, HostTensor> { ["a"] = HostTensor.From<int>([1, 2, 3, 4], 4) });
        SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(file, 64), file.Length);
        await reader.ReadAsync(8, new byte[4]);
        await Assert.ThrowsAsync<InvalidOperationException>(() => reader.ReadAsync(0, new byte[4]).AsTask());

        // The body's length is not known, and it stops 6 bytes into the data.
        SafetensorsStreamReader cut = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(file[..^10], 64), null);
        var error = await Assert.ThrowsAsync<SafetensorsException>(() => cut.ReadAllAsync());
        Assert.Contains("the data ended at byte 6, 10 bytes short of byte 16", error.Message);
    }

    [Fact]
    public async Task StreamReader_ValidBodyCutShort_EveryCutIsRefusedNotMisread()
    {
        var tensors = new Dictionary<string, HostTensor>
        {
            ["q"] = HostTensor.From<float>(TestData.Random(1, 24), 2, 3, 4),
            ["doc_ids"] = HostTensor.From<int>([0, 1], 2),
        };
        byte[] whole = SafetensorsWriter.ToBytes(tensors);
        for (int cut = 0; cut < whole.Length; cut++)
        {
            foreach (long? length in new long?[] { cut, null })
            {
                await Assert.ThrowsAsync<SafetensorsException>(async () =>
                {
                    SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(whole[..cut], 13), length);
                    await reader.ReadAllAsync();
                });
            }
        }
    }

    [Fact]
    public void Preamble_IsWhatComesBeforeTheData()
    {
        var tensors = new Dictionary<string, HostTensor>
        {
            ["q"] = HostTensor.From<float>(TestData.Random(4, 6), 2, 3),
            ["k"] = HostTensor.From<Half>([(Half)1, (Half)2, (Half)3], 3, 1),
        };
        byte[] file = SafetensorsWriter.ToBytes(tensors);
        byte[] preamble = SafetensorsWriter.Preamble([new("q", DType.F32, [2, 3]), new("k", DType.F16, [3, 1])]);
        Assert.Equal(file[..preamble.Length], preamble);
        Assert.Equal(file.Length, preamble.Length + 24 + 6);
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Preamble([new("q", DType.F32, [1]), new("q", DType.F32, [1])]));
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
    public async Task Open_RandomBytes_NeverThrowsAnythingElse()
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

            try
            {
                SafetensorsStreamReader reader = await SafetensorsStreamReader.OpenAsync(new PiecewiseStream(bytes, 5), i % 3 == 0 ? null : bytes.Length);
                await reader.ReadAllAsync();
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
