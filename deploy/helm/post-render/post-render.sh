#!/bin/sh
# Helm post-renderer: reads the chart's rendered manifests on stdin, writes them on stdout with
# deploy/helm/post-render/daemonset-patch.yaml applied to the chaos-daemon DaemonSet.
#   helm upgrade --install chaos-mesh chaos-mesh/chaos-mesh -n chaos-mesh \
#     -f deploy/helm/values-faultd.yaml --post-renderer deploy/helm/post-render/post-render.sh
# Needs `kustomize` or `kubectl` (its built-in kustomize) on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/kustomization.yaml" "$here/daemonset-patch.yaml" "$work/"
cat > "$work/chart.yaml"
if command -v kustomize >/dev/null 2>&1; then
  kustomize build "$work"
else
  kubectl kustomize "$work"
fi
