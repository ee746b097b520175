#!/usr/bin/env bash
# Build (or reuse) the test control plane's binaries: kube-apiserver, kube-controller-manager, kubectl, etcd.
#
# Binaries are cached outside the checkout, keyed by the pinned Kubernetes version and a hash of the inputs
# (go.mod, go.sum, this script), in ${TERRASNAP_CACHE:-~/.cache/terrasnap}/k8s-<version>/bin. GOCACHE and
# GOMODCACHE keep their default (user cache) locations, so a fresh clone on the same machine reuses them.
# Prints the bin directory as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}"
version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
[[ -n "$version" ]] || { echo "build.sh: no k8s.io/kubernetes version in go.mod" >&2; exit 1; }
out="$cache/k8s-$version/bin"
stamp_want="$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-16)"
bins=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() {
  [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp_want" ]] || return 1
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}

if have_all; then echo "$out"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/k8s-$version.build.lock"
flock 9                                   # one build at a time (make cluster, pytest fixture, CI)
if have_all; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: Go toolchain not found (need go >= 1.26)" >&2; exit 1; }
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done

tmp="$cache/k8s-$version/bin.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "build.sh: building Kubernetes $version control plane into $out (cold: 15-30 min on 2 cores)" >&2
cd "$here"
export CGO_ENABLED=0 GOTOOLCHAIN=local
# -p 2: two cores; the link of each binary needs ~1-2 GiB.
go build -p "${TERRASNAP_BUILD_JOBS:-2}" -trimpath -tags timetzdata -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl
go build -p "${TERRASNAP_BUILD_JOBS:-2}" -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
echo "$stamp_want" > "$tmp/.stamp"
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "build.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
