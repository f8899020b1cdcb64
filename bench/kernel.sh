#!/usr/bin/env bash
# The kernel benchmark of issue 11: prefill against an OpenBLAS SGEMM and decode against an OpenBLAS SGEMV's read
# bandwidth, both measured in the same run on this machine, on the fastest OpenBLAS core type that fits the CPU
# (tried in the yardstick's own environment; the machine's OPENBLAS_* settings are left alone). Installs its own
# yardstick (Debian's python3-numpy on OpenBLAS) and prints figures and verdicts; it exits 0 whatever they say,
# because timings on a shared 2-core machine belong in a report, not in a test. A few minutes; --quick repeats less.
#   bench/kernel.sh [--quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! /usr/bin/python3 -c 'import numpy' 2>/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ]; then
  echo "installing python3-numpy and OpenBLAS (apt-get)..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-numpy libopenblas0-pthread >/dev/null
fi

dotnet build src/Client/Cli -c Release -o artifacts/bench/cli -nologo -v quiet >/dev/null
exec /usr/bin/python3 bench/kernel_report.py artifacts/bench/cli/longcluster "$@"
