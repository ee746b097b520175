#!/usr/bin/env bash
# Install (or reuse) Azurite, Microsoft's Azure Storage emulator (the npm package `azurite`, pinned below),
# for the azure:// tests. Cached outside the checkout, keyed by version and a hash of this script, in
# ${TERRASNAP_CACHE:-~/.cache/terrasnap}/azurite-<version>/. Prints azurite-blob's path as its last line.
set -euo pipefail

version="3.37.0"
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}"
out="$cache/azurite-$version"
bin="$out/node_modules/.bin/azurite-blob"
stamp_want="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

have() { [[ -x "$bin" && -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp_want" ]]; }

if have; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/azurite-$version.build.lock"
flock 9                                   # one install at a time (make azurite-bin, pytest, CI)
if have; then echo "$bin"; exit 0; fi

command -v npm >/dev/null || { echo "install_azurite.sh: npm not found (need Node.js >= 18)" >&2; exit 1; }
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "install_azurite.sh: installing azurite $version into $out" >&2
npm install --no-audit --no-fund --no-update-notifier --loglevel=error --prefix "$tmp" "azurite@$version" >&2
"$tmp/node_modules/.bin/azurite-blob" --version >&2
echo "$stamp_want" > "$tmp/.stamp"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "install_azurite.sh: installed in $(( $(date +%s) - start ))s" >&2
echo "$bin"
