"""f32 GEMV yardstick (OpenBLAS SGEMV through numpy): prints one JSON line with the GB/s at which y = A @ x reads A.

A GEMV reads each element of A once and does two FLOPs with it, so it runs at the memory bandwidth a kernel that
streams a matrix can reach: the yardstick for decode, which streams K and V. A is float32 [rows, 4096] with
rows chosen to make it about `bytes` bytes (default 1 GiB, well past any cache).
Thread count comes from OPENBLAS_NUM_THREADS, set by the caller before Python starts.
   gemv.py [bytes] [repeat]
"""
import json
import os
import sys
import time

import numpy as np

COLUMNS = 4096

target = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 30
repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 5
rows = max(1, round(target / (4 * COLUMNS)))
rng = np.random.default_rng(0)
a = rng.random((rows, COLUMNS), dtype=np.float32)
x = rng.random(COLUMNS, dtype=np.float32)
y = np.empty(rows, dtype=np.float32)
np.dot(a, x, out=y)  # warm-up
times = []
for _ in range(repeat):
    start = time.perf_counter()
    np.dot(a, x, out=y)
    times.append(time.perf_counter() - start)
times.sort()
median = times[len(times) // 2]
print(json.dumps({
    "gbps": round(a.nbytes / median / 1e9, 3),
    "ms": round(median * 1000, 3),
    "min_ms": round(times[0] * 1000, 3),
    "bytes": a.nbytes,
    "rows": rows,
    "columns": COLUMNS,
    "threads": int(os.environ.get("OPENBLAS_NUM_THREADS", "0")),
}))
