#!/usr/bin/env bash
# The images' Debian bases, made with mmdebstrap from Debian's packages (no registry image needed):
#
#   bash images/base.sh NAME        build (or find in the cache) localhost/terrasnap/base-NAME:<hash>; print it
#   bash images/base.sh --lock      re-resolve every images/base/*.in into images/base/*.lock (commit them)
#
# NAME is build, worker or operator. images/base/NAME.in lists what the base needs; NAME.lock pins every
# package of the result (package=version, the whole closure). A build installs exactly the locked versions; if
# Debian's mirror no longer serves one (a point release or a security update replaced it), the build takes the
# current versions instead and says so, unless TERRASNAP_STRICT_BASE=1 (release builds), which refuses. The
# versions actually installed are written next to the base's archive and end up in each image's SBOM and labels.
#
# Variant `essential`: Debian's Essential:yes set (dpkg, a shell, coreutils) plus the listed packages; no apt,
# no compilers, no useradd, and no setuid or setgid file left (su, mount: nothing to gain privileges by).
# Manual pages, documentation (but the copyright files) and translations are left out.
# SOURCE_DATE_EPOCH comes from the lock, so the same lock and mirror give the same bytes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/images/base"
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}/images"
podman=(bash "$repo/images/podman.sh")
suite=bookworm
epoch_default=1764547200 # 2025-12-01T00:00:00Z; --lock writes the day it ran

packages() { grep -v -e '^#' -e '^\s*$' "$1"; }

strap() { # strap IN_OR_LOCK_LIST OUT.tar VERSIONS_OUT EPOCH
  local list="$1" out="$2" versions="$3" epoch="$4"
  # shellcheck disable=SC2016  # $1 is mmdebstrap's: the root it builds
  SOURCE_DATE_EPOCH="$epoch" mmdebstrap --quiet --variant=essential --architectures=amd64 \
    --include="$(paste -sd, "$list")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
    --customize-hook='rm -rf "$1"/var/cache/* "$1"/var/log/* "$1"/var/lib/apt' \
    --customize-hook='find "$1" -xdev -type f -perm /6000 -exec chmod ug-s {} +' \
    --customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f '\${Package}=\${Version}\n' | LC_ALL=C sort > '$versions'" \
    "$suite" "$out"
}

if [[ ${1:-} == --lock ]]; then
  bash "$repo/images/podman.sh" --env >/dev/null # installs mmdebstrap if missing
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  epoch="$(date -u -d "$(date -u +%F)" +%s)"
  for in in "$dir"/*.in; do
    name="$(basename "$in" .in)"
    strap <(packages "$in") "$tmp/$name.tar" "$tmp/$name.versions" "$epoch"
    { echo "# images/base/$name.lock: written by \`bash images/base.sh --lock\` from $name.in ($suite, amd64)"
      echo "# SOURCE_DATE_EPOCH=$epoch"
      cat "$tmp/$name.versions"; } >"$dir/$name.lock"
    echo "base.sh: $name.lock: $(grep -vc '^#' "$dir/$name.lock") packages"
  done
  exit 0
fi

name="${1:?usage: images/base.sh build|worker|operator | --lock}"
lock="$dir/$name.lock"
[[ -f $lock ]] || { echo "images/base.sh: no lock $lock (run: bash images/base.sh --lock)" >&2; exit 2; }
hash="$(cat "$lock" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
tag="localhost/terrasnap/base-$name:$hash"
mkdir -p "$cache"
exec 9>"$cache/base-$name.lock"
flock 9
if "${podman[@]}" image exists "$tag"; then echo "$tag"; exit 0; fi
archive="$cache/base-$name-$hash.tar"
versions="$cache/base-$name-$hash.versions"
partial="$cache/base-$name-$hash.partial.tar" # mmdebstrap tells a tarball from a directory by its name
if [[ ! -f $archive || ! -f $versions ]]; then
  epoch="$(sed -n 's/^# SOURCE_DATE_EPOCH=//p' "$lock")"
  epoch="${epoch:-$epoch_default}"
  pinned="$(mktemp)"; trap 'rm -f "$pinned" "$partial"' EXIT
  packages "$lock" >"$pinned"
  if ! strap "$pinned" "$partial" "$versions" "$epoch" 2>"$archive.log"; then
    if [[ ${TERRASNAP_STRICT_BASE:-} == 1 ]]; then
      echo "images/base.sh: the locked packages of $name are no longer all served (TERRASNAP_STRICT_BASE=1):" >&2
      tail -5 "$archive.log" >&2; exit 1
    fi
    echo "images/base.sh: WARNING: Debian no longer serves every version in $lock; building $name from" \
      "today's versions (see $versions; refresh the lock with: bash images/base.sh --lock)" >&2
    strap <(packages "$dir/$name.in") "$partial" "$versions" "$epoch"
  fi
  if ! diff -q <(packages "$lock") "$versions" >/dev/null; then
    echo "images/base.sh: WARNING: base-$name differs from its lock:" >&2
    diff <(packages "$lock") "$versions" | grep '^[<>]' | head -20 >&2 || true
  fi
  mv "$partial" "$archive"
fi
# The cache keeps the three newest bases of each name.
ls -t "$cache/base-$name"-*.tar 2>/dev/null | grep -v '\.partial\.tar$' | tail -n +4 | while read -r old; do
  rm -f "$old" "${old%.tar}.versions" "$old.log"
done
"${podman[@]}" import --quiet \
  --change "LABEL io.terrasnap.base=$name" --change "LABEL io.terrasnap.base.lock=$hash" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  "$archive" "$tag" >/dev/null
echo "$tag"
