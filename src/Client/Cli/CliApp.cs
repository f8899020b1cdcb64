using System.Reflection;
using LongCluster.Tensors;

namespace LongCluster.Cli;

/// <summary>
/// The <c>longcluster</c> command line. Exit codes: 0 success, 1 the work ran but failed (verification, I/O),
/// 2 bad usage or bad input (nothing was written).
/// </summary>
public static class CliApp
{
    public const int ExitOk = 0;
    public const int ExitFailed = 1;
    public const int ExitUsage = 2;

    private const string Usage = """
        longcluster — exact attention over long sequences

        Usage:
          longcluster demo [--silos 4] [--tokens 32768] [--layers 4] [--hq 8] [--hkv 2] [--d 128] [--mask causal] [--layout zigzag|auto]
                           [--shards P] [--dtype f32|f16|bf16] [--decode 16] [--seed N]
              A local cluster of N silos in this process; a sequence prefilled through the SDK with progress, decode
              steps, every layer checked against the single-node kernel; timings. Exit 0 when all checks pass.
          longcluster attend --input IN.safetensors --output OUT.safetensors [--mask M] [--scale S] [--threads N] [--backend cpu|ilgpu]
                             [--shards P --layout contiguous|striped[:S]|zigzag|ulysses|hybrid:U|auto]
                             [--endpoint URL [--token T] | --local-cluster N]
              Reads q [Tq,Hq,d], k and v [Tk,Hkv,d] (f32/f16/bf16) and optional doc_ids [N] (i32, indexed by
              position), q_positions [Tq] and k_positions [Tk] (i64); writes o [Tq,Hq,d] and lse [Tq,Hq] as f32.
              With --shards, P in-process ranks compute it context-parallel (q and k over the same tokens).
              With --endpoint (token: --token or LONGCLUSTER_TOKEN) or --local-cluster N, a cluster computes it.
              --layout auto: the layout the cost model predicts fastest (the cluster's coordinator chooses; in process,
              with the this-machine profile). --backend ilgpu: the ILGPU kernels (CUDA when this machine has a device,
              else ILGPU's CPU accelerator), with or without --shards.
          longcluster silo [--redis HOST:PORT [--redis-password P] [--redis-tls] --tls-cert F --tls-key F --tls-ca F]
                           [--primary HOST:PORT] [--cluster-id ID] [--host IP] [--port 11111] [--http-port 8080] [--token T] [--name N]
              One Orleans silo with the attention service: development clustering (a cluster of one, or joining the
              silo at --primary), or Redis shared by all silos with mutual TLS from the cluster's authority.
          longcluster plan --tokens T --shards P [--layout zigzag] [--mask causal] [--hq 8] [--hkv Hq] [--d 128] [--dtype f32] [--doc-len 4096]
              Per-step, per-shard live work, load imbalance and bytes sent, from positions alone.
          longcluster plan --model PROFILE [--nodes 1,2,4,...,1024] [--tokens 65536] [--hq 32] [--hkv 8] [--d 128] [--mask causal]
                           [--dtype f32] [--layouts zigzag,striped,contiguous,ulysses,hybrid:2] [--png FILE]
              The cost model's layer time (compute, waiting, all-to-all), efficiency vs single node / P and tokens/s of
              every layout at every node count, or why a layout cannot run there; --png plots efficiency and tokens/s
              against nodes. PROFILE: a JSON file or a built-in name (h200-400g, cpu-node, this-machine). Last line JSON.
          longcluster plan --calibrate [--out FILE]
              Measures this machine (the kernel with its cores split as a local cluster splits them, Orleans transfers
              between two silos in this process) in well under a minute and prints its profile, or writes it to FILE.
          longcluster bench kernel [--tq N] [--tk N] [--hq N] [--hkv N] [--d N] [--mask M] [--dtype T] [--threads N] [--repeat N] [--backend cpu|ilgpu]
              Times the forward kernel; the last line is a JSON object with gflops and ms.
          longcluster bench decode [--tk 262144] [--hq 32] [--hkv 8] [--d 128] [--mask full] [--dtype bf16] [--threads N] [--repeat 5] [--backend cpu|ilgpu]
              Times the decode kernel for one query row at position Tk-1; the last line is a JSON object with the
              GB/s of K and V read (2 * Tk * Hkv * d * sizeof(dtype) bytes over the median time) and ms.
          longcluster bench retrieval [--tokens 1048576] [--hq 32] [--hkv 8] [--d 128] [--dtype bf16] [--silos 3] [--queries 200] [--mask retrieval:...]
              A retrieval sequence with a synthetic history bulk-loaded into a local cluster's memory grains: decode
              query p50/p99 for one layer, exact decode over the same history, needle recall (100 trials); a table,
              then one JSON line with tokens, p50_ms, p99_ms, exact_decode_ms, needle_recall, resident_bytes, spilled_bytes.
          longcluster bench gpu [--probe] [--tokens 8192,32768] [--hq 32] [--hkv 8] [--d 128] [--dtypes f32,bf16] [--masks full,causal]
                                [--decode-tk 262144] [--sgemm 8192] [--repeat 5] [--device cuda|cpu]
              The ILGPU kernels on the CUDA device, data resident: forward GFLOP/s beside cuBLAS SGEMM, decode GB/s
              beside a device copy, from the same run; exit 3 when no CUDA device is found (--probe: only that
              check). --device cpu: ILGPU's CPU accelerator, no SGEMM yardstick. The last line is JSON.
          longcluster bench ring [--tokens 16384] [--shards 2] [--layout zigzag] [--mask causal] [--hq 8] [--hkv Hq] [--d 128] [--repeat 3] [--backend cpu|ilgpu]
              The in-process context-parallel driver (P ranks x 1 thread) against the kernel on 1 thread.
          longcluster bench transport [--frames 64] [--frame-mib 16] [--calls 20000] [--in-process]
              Orleans grain calls between two silo processes (Redis, mutual TLS) as the ring uses them: frames one
              at a time (GB/s) and small calls (p50/p99 latency); the last line is JSON.
          longcluster bench control [--local-cluster 3 | --endpoint URL [--token T]] [--requests 200]
              The SDK's control requests (create, describe, begin chunk, list) in JSON and in MessagePack: body bytes
              of each request and answer, mean/p50/p99 ms per request; the last line is JSON.
          longcluster bench load [--endpoint URL [--token T] | --local-cluster 3] [--clients 8] [--minutes 10 | --seconds S] [--seed 1]
              Concurrent clients create, prefill (in chunks), decode and delete sequences of random shapes, masks and
              layouts, every output checked against the single-node kernel; each minute the requests so far and the
              silos' managed heap and RSS (from /metrics); then p50/p99 per operation and failures by code. The last
              line is JSON (requests, wrong, errors, refused, heap_mb, rss_mb, ops, ...). Exit 0: nothing wrong, no errors.
          longcluster bench scaling [--tokens 65536] [--layouts zigzag,striped,contiguous,ulysses,hybrid:2] [--silos 1,2,4] [--link RATE:LATENCY]
                                    [--layers 2] [--hq 8] [--hkv 2] [--d 128] [--dtype f32] [--mask causal] [--seed 1] [--model calibrate|PROFILE|none]
              For each silo count P, P silo processes (Redis, mutual TLS), each pinned to 1/P of the cores; for each
              layout a verified prefill through the SDK: the service's layer time (median after the warm-up layer 0),
              its split, efficiency against the single-node kernel. --link 10gbit:50us: silos in network namespaces
              on shaped veth links (root, iproute2; otherwise loopback). Beside each point the cost model's prediction
              (--model: calibrate, the default, measures this machine first as plan --calibrate does; or a profile
              file or built-in name; none: no prediction), given the cores each shard's silo was pinned to. The
              last line is JSON.
          longcluster local-cluster [--silos 3] [--processes] [--for S]
              N silos with the attention service on this machine (in this process, or as silo processes with a
              redis-server it starts), until Ctrl+C, SIGTERM or S seconds; then they leave gracefully.
          longcluster --version | --help

        Masks: full, causal, window:W, prefix:N, document, document-causal, document-window:W, document-prefix:N.
        Exit codes: 0 ok, 1 failed, 2 bad usage or input.
        """;

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        ArgumentNullException.ThrowIfNull(args);
        try
        {
            if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
            {
                stdout.WriteLine(Usage);
                return args.Length == 0 ? ExitUsage : ExitOk;
            }

            if (args[0] == "--version")
            {
                stdout.WriteLine(typeof(CliApp).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown");
                return ExitOk;
            }

            string[] rest = args[1..];
            return args[0] switch
            {
                "attend" => AttendCommand.Run(rest, stdout, stderr),
                "demo" => DemoCommand.Run(rest, stdout),
                "plan" => PlanCommand.Run(rest, stdout),
                "local-cluster" => LocalClusterCommand.Run(rest, stdout),
                "silo" => SiloCommand.Run(rest, stdout, stderr),
                "bench" when rest.Length > 0 && rest[0] == "kernel" => BenchKernelCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "decode" => BenchDecodeCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "ring" => BenchRingCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "transport" => BenchTransportCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "control" => BenchControlCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "load" => BenchLoadCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "scaling" => BenchScalingCommand.Run(rest[1..], stdout),
                "bench" when rest.Length > 0 && rest[0] == "gpu" => BenchGpuCommand.Run(rest[1..], stdout, stderr),
                "bench" when rest.Length > 0 && rest[0] == "retrieval" => BenchRetrievalCommand.Run(rest[1..], stdout),
                "bench" => throw new UsageException("bench: say what to benchmark: 'longcluster bench kernel', 'bench decode', 'bench ring', 'bench transport', 'bench control', 'bench load', 'bench scaling', 'bench gpu' or 'bench retrieval'"),
                _ => throw new UsageException($"unknown command '{args[0]}' (commands: demo, attend, plan, local-cluster, silo, bench; see --help)"),
            };
        }
        catch (Exception e) when (e is UsageException or InputException or SafetensorsException)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitUsage;
        }
        catch (IOException e)
        {
            stderr.WriteLine($"error: {e.Message}");
            return ExitFailed;
        }
    }
}

/// <summary>Input data that is well-formed as a file but wrong for the request (shape, dtype, non-finite values).</summary>
internal sealed class InputException(string message) : Exception(message);
