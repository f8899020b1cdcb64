"""Runs `longcluster bench kernel` for the foundation issue's figures and prints them beside an OpenBLAS GEMM.

Targets (f32, Hq = Hkv = 8, T = 4096, d = 128 and d = 64): full mask at >= 65% of GEMM GFLOP/s with 1 and 2
threads; causal wall time <= 0.55 x full; f16 storage within 15% of f32 speed.
"""
import json
import os
import subprocess
import sys

cli = sys.argv[1]
quick = "--quick" in sys.argv
repeat = "3" if quick else "7"
here = os.path.dirname(os.path.abspath(__file__))


def gemm(threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(["/usr/bin/python3", os.path.join(here, "gemm.py"), "2048", repeat],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def kernel(**options):
    args = [cli, "bench", "kernel", "--tq", "4096", "--hq", "8", "--hkv", "8", "--repeat", repeat]
    for key, value in options.items():
        args += ["--" + key, str(value)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


rows = []
verdicts = []
for d in (128, 64):
    g1 = gemm(1)
    full1 = kernel(d=d, threads=1, mask="full")
    g2 = gemm(2)
    full2 = kernel(d=d, threads=2, mask="full")
    causal2 = kernel(d=d, threads=2, mask="causal")
    causal1 = kernel(d=d, threads=1, mask="causal")
    f16 = kernel(d=d, threads=2, mask="full", dtype="f16")
    bf16 = kernel(d=d, threads=2, mask="full", dtype="bf16")
    g2b = gemm(2)
    g1b = gemm(1)
    gemm1 = max(g1["gflops"], g1b["gflops"])
    gemm2 = max(g2["gflops"], g2b["gflops"])
    for name, r, yard in (("full 1 thread", full1, gemm1), ("full 2 threads", full2, gemm2),
                          ("causal 1 thread", causal1, gemm1), ("causal 2 threads", causal2, gemm2),
                          ("f16 full 2 threads", f16, gemm2), ("bf16 full 2 threads", bf16, gemm2)):
        rows.append((d, name, r["ms"], r["gflops"], yard, r["gflops"] / yard))
    verdicts += [
        (f"d={d} full 1 thread >= 65% of 1-thread GEMM", full1["gflops"] / gemm1, full1["gflops"] / gemm1 >= 0.65),
        (f"d={d} full 2 threads >= 65% of 2-thread GEMM", full2["gflops"] / gemm2, full2["gflops"] / gemm2 >= 0.65),
        (f"d={d} causal time <= 0.55 x full (2 threads)", causal2["ms"] / full2["ms"], causal2["ms"] / full2["ms"] <= 0.55),
        (f"d={d} causal time <= 0.55 x full (1 thread)", causal1["ms"] / full1["ms"], causal1["ms"] / full1["ms"] <= 0.55),
        (f"d={d} f16 within 15% of f32 speed", f16["ms"] / full2["ms"], f16["ms"] / full2["ms"] <= 1.15),
    ]

print(f"{'d':>4} {'case':<22} {'median ms':>10} {'GFLOP/s':>9} {'GEMM GFLOP/s':>13} {'ratio':>7}")
for d, name, ms, gf, yard, ratio in rows:
    print(f"{d:>4} {name:<22} {ms:>10.1f} {gf:>9.1f} {yard:>13.1f} {ratio:>7.2f}")
print()
for text, value, ok in verdicts:
    print(f"{'ok  ' if ok else 'MISS'} {text}: {value:.3f}")
print(json.dumps({"rows": [dict(zip(("d", "case", "ms", "gflops", "gemm_gflops", "ratio"), r)) for r in rows]}))
