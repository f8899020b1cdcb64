"""f32 GEMM yardstick (OpenBLAS through numpy): prints one JSON line with the GFLOP/s of C = A @ B.

Thread count comes from OPENBLAS_NUM_THREADS, set by the caller before Python starts.
"""
import json
import os
import sys
import time

import numpy as np

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 5
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
c = a @ b  # warm-up
times = []
for _ in range(repeat):
    start = time.perf_counter()
    np.matmul(a, b, out=c)
    times.append(time.perf_counter() - start)
times.sort()
median = times[len(times) // 2]
print(json.dumps({
    "gflops": round(2.0 * n ** 3 / median / 1e9, 2),
    "ms": round(median * 1000, 3),
    "n": n,
    "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
}))
