#!/usr/bin/env bash
# Build (or reuse) helm from the Go module proxy (helm.sh/helm/v3, pinned in tests/chart/helm/go.mod).
#
# The binary is cached outside the checkout, keyed by the pinned version and a hash of the inputs
# (go.mod, go.sum, this script), in ${TERRASNAP_CACHE:-~/.cache/terrasnap}/helm-<version>/helm.
# GOCACHE and GOMODCACHE keep their default (user cache) locations. Prints the binary's path as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/helm"
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}"
version="$(awk '{ if ($1 == "require") { $1 = ""; $0 = $0 } } $1 == "helm.sh/helm/v3" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
[[ -n "$version" ]] || { echo "build_helm.sh: no helm.sh/helm/v3 version in go.mod" >&2; exit 1; }
out="$cache/helm-$version"
stamp_want="$(cat "$mod/go.mod" "$mod/go.sum" "$here/build_helm.sh" | sha256sum | cut -c1-16)"

have() { [[ -x "$out/helm" && -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp_want" ]]; }

if have; then echo "$out/helm"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/helm-$version.build.lock"
flock 9                                   # one build at a time (make helm-bin, pytest, CI)
if have; then echo "$out/helm"; exit 0; fi

command -v go >/dev/null || { echo "build_helm.sh: Go toolchain not found (need go >= 1.25)" >&2; exit 1; }
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
# As helm's own Makefile does: the default Kubernetes version (helm template, lint) follows client-go v0.X → v1.X.
cd "$mod"
client_go="$(GOTOOLCHAIN=local go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "build_helm.sh: building helm $version into $out (cold: a few minutes on 2 cores)" >&2
cd "$mod"
export CGO_ENABLED=0 GOTOOLCHAIN=local
go build -p "${TERRASNAP_BUILD_JOBS:-2}" -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
"$tmp/helm" version --short >&2
echo "$stamp_want" > "$tmp/.stamp"
mkdir -p "$out"
mv -f "$tmp/helm" "$out/helm"; mv -f "$tmp/.stamp" "$out/.stamp"
echo "build_helm.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out/helm"
