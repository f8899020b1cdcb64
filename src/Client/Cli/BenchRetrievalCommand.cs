using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using LongCluster.Client;
using LongCluster.Contracts;
using LongCluster.Grains;
using LongCluster.Grains.Memory;
using LongCluster.Kernels;
using LongCluster.Service;
using LongCluster.Tensors;
using Microsoft.Extensions.DependencyInjection;
using Spectre.Console;
using static System.FormattableString;

namespace LongCluster.Cli;

/// <summary>
/// <c>longcluster bench retrieval</c>: a retrieval sequence of one layer with a synthetic history of <c>--tokens</c>
/// tokens in a local in-process cluster — its evicted blocks bulk-loaded into the memory grains (representatives from
/// a synthetic query sum per block, not a prefill), init and window into the shard — then decode queries through the
/// shard, which scores the memory grains' blocks, takes the top-k and merges the holders' partials. Beside it, exact
/// decode (<see cref="Attention.Decode{T}"/>) over the same history in this process, and a needle test: a key planted
/// in a random evicted block (the block's own query sum aligned with it, as a salient token's neighbours attend to
/// it) and a decode query aligned with it; recalled when every head's output is the needle's value (cosine ≥ 0.9),
/// which only happens if its block was selected. The last line is one JSON object for scripts.
/// </summary>
internal static class BenchRetrievalCommand
{
    private const int Needles = 100;

    public static int Run(string[] args, TextWriter stdout)
    {
        CommandLine options = CommandLine.Parse("bench retrieval", args, ["tokens", "hq", "hkv", "d", "dtype", "silos", "queries", "mask"], []);
        int tokens = options.Int("tokens", 1 << 20, 1);
        (int hq, int hkv) = options.Heads(32, 8);
        int d = options.Int("d", 128, 1, AttentionShape.MaxHeadDim);
        DType dtype = options.FloatType("dtype", "bf16");
        int silos = options.Int("silos", 3, 1, 64);
        int queries = options.Int("queries", 200, 1);
        RetrievalRule rule = options.Retrieval() ?? new RetrievalRule();
        if (rule.EvictedBlocks(tokens, rule.BlockCount(tokens + 1)) <= rule.TopK)
        {
            throw new UsageException(
                $"bench retrieval: --tokens {tokens} evicts no more than topk = {rule.TopK} blocks of {rule}; give at least {rule.Init + rule.Local + ((rule.TopK + 1) * rule.Block)} tokens");
        }

        var shape = new Shape(tokens, hq, hkv, d, rule);
        Result result = dtype switch
        {
            DType.F32 => RunAsync<float>(shape, silos, queries, x => x).GetAwaiter().GetResult(),
            DType.F16 => RunAsync<Half>(shape, silos, queries, x => (Half)x).GetAwaiter().GetResult(),
            _ => RunAsync<BFloat16>(shape, silos, queries, x => (BFloat16)x).GetAwaiter().GetResult(),
        };

        string dtypeText = dtype.SafetensorsName().ToLowerInvariant();
        IAnsiConsole console = CliConsole.For(stdout);
        console.Write(CliConsole.Table(console, "shape", "rule", ">silos", ">evicted blocks", ">decode p50 ms", ">p99 ms", ">exact decode ms", ">needle recall", ">resident MiB", ">spilled MiB").AddRow(
            Invariant($"T={tokens} Hq={hq} Hkv={hkv} d={d} {dtypeText}"), rule.ToString(), Invariant($"{silos}"), Invariant($"{result.Evicted}"),
            Invariant($"{result.P50:F3}"), Invariant($"{result.P99:F3}"), Invariant($"{result.Exact:F3}"), Invariant($"{result.Recall:F2}"),
            Invariant($"{result.Resident / 1048576.0:F1}"), Invariant($"{result.Spilled / 1048576.0:F1}")));
        Table bySilo = CliConsole.Table(console, "silo", ">memory resident MiB", ">spilled MiB");
        foreach ((string silo, long resident, long spilled) in result.PerSilo)
        {
            bySilo.AddRow(silo, Invariant($"{resident / 1048576.0:F1}"), Invariant($"{spilled / 1048576.0:F1}"));
        }

        console.Write(bySilo);
        var summary = new Dictionary<string, object>
        {
            ["tokens"] = tokens,
            ["p50_ms"] = Math.Round(result.P50, 3),
            ["p99_ms"] = Math.Round(result.P99, 3),
            ["exact_decode_ms"] = Math.Round(result.Exact, 3),
            ["needle_recall"] = result.Recall,
            ["resident_bytes"] = result.Resident,
            ["spilled_bytes"] = result.Spilled,
            ["hq"] = hq,
            ["hkv"] = hkv,
            ["d"] = d,
            ["dtype"] = dtypeText,
            ["silos"] = silos,
            ["queries"] = queries,
            ["needles"] = Needles,
            ["evicted_blocks"] = result.Evicted,
            ["mask"] = rule.ToString(),
        };
        stdout.WriteLine(JsonSerializer.Serialize(summary));
        return CliApp.ExitOk;
    }

    private static async Task<Result> RunAsync<T>(Shape shape, int silos, int queries, Func<float, T> convert)
        where T : unmanaged
    {
        RetrievalRule rule = shape.Rule;
        int tokens = shape.Tokens;
        int blocks = rule.BlockCount(tokens);
        int evicted = rule.EvictedBlocks(tokens, rule.BlockCount(tokens + 1));
        int row = shape.Hkv * shape.D;
        var random = new Random(7);

        // The history: K and V of every token, needles planted in distinct evicted blocks (K and V = 2u in every KV head).
        T[] key = Fill(random, (long)tokens * row, convert);
        T[] value = Fill(random, (long)tokens * row, convert);
        int[] needleBlocks = [.. Enumerable.Range(0, evicted).OrderBy(_ => random.Next()).Take(Math.Min(Needles, evicted))];
        var needles = new (int Position, float[] Direction)[needleBlocks.Length];
        for (int i = 0; i < needles.Length; i++)
        {
            float[] u = Direction(random, shape.D);
            int at = (int)rule.BlockStart(needleBlocks[i]) + random.Next(rule.Block);
            for (int g = 0; g < shape.Hkv; g++)
            {
                for (int c = 0; c < shape.D; c++)
                {
                    key[((long)at * row) + (g * shape.D) + c] = convert(2 * u[c]);
                    value[((long)at * row) + (g * shape.D) + c] = convert(2 * u[c]);
                }
            }

            needles[i] = (at, u);
        }

        // Each whole block's representatives, from a synthetic query sum per KV head (a needle's block: its direction).
        var blockShape = new AttentionShape(rule.Block, rule.Block, shape.Hq, shape.Hkv, shape.D);
        var keySums = new float[(long)blocks * row];
        var positions = new int[shape.Hkv * rule.Representatives];
        var needleOf = needleBlocks.Select((b, i) => (b, i)).ToDictionary(x => x.b, x => x.i);
        for (int j = 0; j < blocks; j++)
        {
            float[] querySum = new float[row];
            for (int g = 0; g < shape.Hkv; g++)
            {
                (needleOf.TryGetValue(j, out int n) ? needles[n].Direction : Direction(random, shape.D)).CopyTo(querySum, g * shape.D);
            }

            long first = rule.BlockStart(j) * row;
            RetrievalAttention.RepresentativesOfSum<T>(querySum, key.AsSpan((int)first, rule.Block * row), blockShape, rule.Representatives, positions, keySums.AsSpan((int)((long)j * row), row));
        }

        await using LocalAttentionCluster cluster = await LocalAttentionCluster.StartAsync(silos).ConfigureAwait(false);
        using var client = new LongClusterClient(new LongClusterClientOptions { Endpoints = cluster.Endpoints, Token = cluster.ApiToken, RequestTimeout = TimeSpan.FromMinutes(10) });
        var spec = new SequenceSpec { Layers = 1, QueryHeads = shape.Hq, KeyValueHeads = shape.Hkv, HeadDim = shape.D, DType = HostTensor.DTypeOf<T>().SafetensorsName().ToLowerInvariant(), Mask = rule.ToString() };
        const string Id = "bench-retrieval";
        await client.CreateSequenceAsync(spec, Id).ConfigureAwait(false);
        IGrainFactory grains = cluster.Silos[0].Services.GetRequiredService<IGrainFactory>();
        ShardAddress address = await grains.GetGrain<ICoordinatorGrain>(Id).ShardAsync(0, CancellationToken.None).ConfigureAwait(false);
        var memoryShape = new MemoryShape(spec.DType, rule.Block, shape.Hq, shape.Hkv, shape.D);
        byte[] Bytes(T[] tensor, long firstRow, long rows) => MemoryMarshal.AsBytes(tensor.AsSpan((int)(firstRow * row), (int)(rows * row))).ToArray();

        // Evicted blocks straight into their memory grains (block j in part j mod silos), a few blocks a call.
        const int PerCall = 16;
        for (int part = 0; part < silos; part++)
        {
            IMemoryGrain memory = grains.GetGrain<IMemoryGrain>(MemoryGrain.Key(Id, address.Epoch, 0, part, silos));
            int[] mine = [.. Enumerable.Range(0, evicted).Where(j => j % silos == part)];
            for (int i = 0; i < mine.Length; i += PerCall)
            {
                int[] batch = mine[i..Math.Min(mine.Length, i + PerCall)];
                int blockBytes = rule.Block * row * Marshal.SizeOf<T>();
                var k = new byte[batch.Length * blockBytes];
                var v = new byte[batch.Length * blockBytes];
                var sums = new float[batch.Length * row];
                for (int b = 0; b < batch.Length; b++)
                {
                    int first = (int)(rule.BlockStart(batch[b]) * row);
                    MemoryMarshal.AsBytes(key.AsSpan(first, rule.Block * row)).CopyTo(k.AsSpan(b * blockBytes));
                    MemoryMarshal.AsBytes(value.AsSpan(first, rule.Block * row)).CopyTo(v.AsSpan(b * blockBytes));
                    keySums.AsSpan(batch[b] * row, row).CopyTo(sums.AsSpan(b * row));
                }

                await memory.StoreAsync(new MemoryStore(Id, address.Epoch, memoryShape, batch, k, v, sums), CancellationToken.None).ConfigureAwait(false);
            }
        }

        ISequenceShardGrain shard = grains.GetGrain<ISequenceShardGrain>(address.Key);
        long windowStart = rule.BlockStart(evicted);
        await shard.LoadRetrievalAsync(address.Epoch, new RetrievalHistory(
            0, tokens, evicted, Bytes(key, 0, rule.Init), Bytes(value, 0, rule.Init), Bytes(key, windowStart, tokens - windowStart), Bytes(value, windowStart, tokens - windowStart),
            keySums.AsSpan((int)((long)evicted * row), (blocks - evicted) * row).ToArray(), Direction(random, row)), CancellationToken.None).ConfigureAwait(false);

        // Decode queries through the shard (random rows). The first WarmUp are untimed: first touch, and the JIT, which
        // recompiles a method from tier 0 only after 30 calls, so with 5 untimed the first ~30 timed queries ran on
        // tier-0 code; a long-running service's steady state is what the figure is for.
        const int WarmUp = 40;
        long position = tokens;
        var timings = new List<double>();
        for (int i = 0; i < queries + WarmUp; i++)
        {
            ShardDecode step = Step(address.Epoch, position++, Fill(random, shape.Hq * shape.D, convert), Fill(random, row, convert), Fill(random, row, convert), shape);
            long started = Stopwatch.GetTimestamp();
            _ = await shard.DecodeAsync(step, CancellationToken.None).ConfigureAwait(false);
            if (i >= WarmUp)
            {
                timings.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
        }

        // Exact decode over the same history, in this process.
        var exactShape = new AttentionShape(1, tokens, shape.Hq, shape.Hkv, shape.D);
        T[] exactQuery = Fill(random, shape.Hq * shape.D, convert);
        long[] keyPositions = [.. Enumerable.Range(0, tokens).Select(i => (long)i)];
        var o = new float[shape.Hq * shape.D];
        var lse = new float[shape.Hq];
        double exact = BenchTimer.Median(BenchTimer.Measure(
            3, () => Attention.Decode<T>(exactQuery, key, value, exactShape, AttentionMask.Causal, new AttentionTokens([tokens - 1], keyPositions), o, lse))) * 1000;

        // Needles: a query aligned with the needle in every head; recalled when every head's output is the needle's value.
        int recalled = 0;
        foreach ((int _, float[] u) in needles)
        {
            T[] query = new T[shape.Hq * shape.D];
            for (int h = 0; h < shape.Hq; h++)
            {
                for (int c = 0; c < shape.D; c++)
                {
                    query[(h * shape.D) + c] = convert(2 * u[c]);
                }
            }

            DecodePartial answer = await shard.DecodeAsync(Step(address.Epoch, position++, query, Fill(random, row, convert), Fill(random, row, convert), shape), CancellationToken.None).ConfigureAwait(false);
            bool all = Enumerable.Range(0, shape.Hq).All(h => Cosine(answer.Output.AsSpan(h * shape.D, shape.D), u) >= 0.9);
            recalled += all ? 1 : 0;
        }

        var perSilo = cluster.Silos.Select(s => (s.Address, s.Services.GetRequiredService<MemoryTier>())).Select(s => (s.Address, s.Item2.ResidentBytes, s.Item2.SpilledBytes)).ToArray();
        await client.DeleteSequenceAsync(Id).ConfigureAwait(false);
        timings.Sort();
        return new Result(
            timings[timings.Count / 2], timings[Math.Min(timings.Count - 1, (int)Math.Ceiling(timings.Count * 0.99) - 1)], exact, needles.Length == 0 ? 0 : (double)recalled / needles.Length,
            perSilo.Sum(s => s.ResidentBytes), perSilo.Sum(s => s.SpilledBytes), evicted, perSilo);
    }

    private static ShardDecode Step<T>(string epoch, long position, T[] query, T[] key, T[] value, Shape shape)
        where T : unmanaged
    {
        string dtype = HostTensor.DTypeOf<T>().SafetensorsName();
        return new ShardDecode(
            epoch, 0, position, 0, true,
            new TensorRows(dtype, [1, shape.Hq, shape.D], MemoryMarshal.AsBytes(query.AsSpan()).ToArray()),
            new TensorRows(dtype, [1, shape.Hkv, shape.D], MemoryMarshal.AsBytes(key.AsSpan()).ToArray()),
            new TensorRows(dtype, [1, shape.Hkv, shape.D], MemoryMarshal.AsBytes(value.AsSpan()).ToArray()));
    }

    /// <summary>Uniform values in [−1, 1) from a xorshift generator seeded by <paramref name="random"/> (fast enough for gigabytes).</summary>
    private static T[] Fill<T>(Random random, long count, Func<float, T> convert)
    {
        var values = new T[count];
        ulong state = (ulong)random.NextInt64() | 1;
        for (long i = 0; i < count; i++)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            values[i] = convert(((state >> 40) * (2f / (1 << 24))) - 1f);
        }

        return values;
    }

    /// <summary>A random direction with elements of variance about 1 (uniform in ±√3).</summary>
    private static float[] Direction(Random random, int length) => [.. Enumerable.Range(0, length).Select(_ => (float)(((random.NextDouble() * 2) - 1) * Math.Sqrt(3)))];

    private static double Cosine(ReadOnlySpan<float> a, float[] b)
    {
        double dot = 0;
        double aa = 0;
        double bb = 0;
        for (int i = 0; i < b.Length; i++)
        {
            dot += a[i] * (double)b[i];
            aa += a[i] * (double)a[i];
            bb += b[i] * (double)b[i];
        }

        return dot / Math.Sqrt((aa * bb) + 1e-30);
    }

    private readonly record struct Shape(int Tokens, int Hq, int Hkv, int D, RetrievalRule Rule);

    private sealed record Result(double P50, double P99, double Exact, double Recall, long Resident, long Spilled, int Evicted, (string Silo, long Resident, long Spilled)[] PerSilo);
}
