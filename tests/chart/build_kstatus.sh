#!/usr/bin/env bash
# Build (or reuse) a tiny command around kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, pinned in
# tests/chart/kstatus-go/go.mod) from the Go module proxy, cached in
# ${TERRASNAP_CACHE:-~/.cache/terrasnap}/kstatus-<version>/kstatus. Prints the binary's path as its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/kstatus-go"
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}"
version="$(awk '$1 == "sigs.k8s.io/cli-utils" && $2 ~ /^v/ {print $2; exit}' "$mod/go.mod")"
[[ -n "$version" ]] || { echo "build_kstatus.sh: no sigs.k8s.io/cli-utils version in go.mod" >&2; exit 1; }
out="$cache/kstatus-$version"
stamp_want="$(cat "$mod/go.mod" "$mod/go.sum" "$mod/main.go" "$here/build_kstatus.sh" | sha256sum | cut -c1-16)"
have() { [[ -x "$out/kstatus" && -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp_want" ]]; }
if have; then echo "$out/kstatus"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/kstatus-$version.build.lock"
flock 9
if have; then echo "$out/kstatus"; exit 0; fi
command -v go >/dev/null || { echo "build_kstatus.sh: Go toolchain not found" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$out"
cd "$mod"
CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$out/kstatus.tmp.$$" .
mv -f "$out/kstatus.tmp.$$" "$out/kstatus"
echo "$stamp_want" > "$out/.stamp"
echo "build_kstatus.sh: built in $(( $(date +%s) - start ))s" >&2
echo "$out/kstatus"
