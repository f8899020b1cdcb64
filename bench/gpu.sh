#!/usr/bin/env bash
# Issue 12's GPU check, for a machine with an NVIDIA GPU and the .NET SDK: builds, runs the ILGPU kernel tests on the
# CUDA accelerator (LONGCLUSTER_ILGPU_DEVICE=cuda; on other machines they run on ILGPU's CPU accelerator), then prints
# the ILGPU kernels' speed beside yardsticks measured in the same run: forward GFLOP/s (f32 and bf16 storage; Hq 32,
# Hkv 8, d 128; T 8192 and 32768; full and causal; live pairs only) beside cuBLAS SGEMM through ILGPU.Algorithms, and
# decode GB/s beside a device-to-device copy's bandwidth (`longcluster bench gpu`, whose last line is JSON).
# Exits non-zero, saying why, when no CUDA device is found or a test fails; it reports speed, it does not assert it.
#   bench/gpu.sh [--quick]      (--quick: T 8192 only)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

if ! command -v dotnet >/dev/null; then
  echo "bench/gpu.sh: the .NET SDK (dotnet) is not on PATH" >&2
  exit 2
fi

dotnet build src/Client/Cli -c Release -o artifacts/bench/cli -nologo -v quiet >/dev/null
cli=artifacts/bench/cli/longcluster

# The device first: without CUDA there is nothing to measure (the CLI says why and exits 3).
"$cli" bench gpu --probe

echo "== ILGPU kernel tests on the CUDA accelerator"
LONGCLUSTER_ILGPU_DEVICE=cuda dotnet test tests/Kernels.Gpu.Tests -c Release --nologo --logger "console;verbosity=minimal"

echo "== forward and decode against cuBLAS SGEMM and a device copy"
tokens=8192,32768
[ "${1:-}" = "--quick" ] && tokens=8192
exec "$cli" bench gpu --tokens "$tokens"
