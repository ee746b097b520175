#!/usr/bin/env bash
# podman as the project runs it, daemonless and without Docker:
#
#   bash images/podman.sh [PODMAN ARGS...]    podman with the project's storage and containers.conf
#   bash images/podman.sh --env               the environment that does the same (KEY=VALUE lines)
#
# The first call installs what is missing from Debian's packages (podman, buildah, mmdebstrap, runc, uidmap;
# needs root, as sessions and CI have here) and writes the configuration under
# ${TERRASNAP_CACHE:-~/.cache/terrasnap}/podman/. Why these settings (measured on the test machines):
# crun refuses to start containers while the host's cgroups are in hybrid mode, so the runtime is Debian's
# runc; cgroupfs, since there is no systemd to delegate to; `default_ulimits = []`, because raising the
# default ulimits is not permitted here; overlay storage in the cache (a second run reuses every layer).
set -euo pipefail
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}/podman"
conf="$cache/containers.conf"
storage="$cache/storage.conf"

need=()
for tool in podman:podman buildah:buildah mmdebstrap:mmdebstrap runc:runc newuidmap:uidmap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "images/podman.sh: missing ${need[*]}: install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
  lock="$cache.install.lock"
  mkdir -p "$(dirname "$lock")"
  (
    flock 9
    echo "images/podman.sh: installing ${need[*]} from Debian's packages" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  ) 9>"$lock"
fi

# Rewritten whenever what this script would write differs (a changed setting reaches existing caches).
mkdir -p "$cache/storage"
conf_text="# written by images/podman.sh
[containers]
default_ulimits = []
[engine]
cgroup_manager = \"cgroupfs\"
runtime = \"runc\"
events_logger = \"file\""
storage_text="# written by images/podman.sh
[storage]
driver = \"overlay\"
graphroot = \"$cache/storage\"
runroot = \"/tmp/terrasnap-podman-$(id -u)\""
write() { # write FILE TEXT, unless it already holds TEXT
  if [[ ! -f $1 || "$(cat "$1")" != "$2" ]]; then
    printf '%s\n' "$2" >"$1.$$"
    mv "$1.$$" "$1"
  fi
}
write "$conf" "$conf_text"
write "$storage" "$storage_text"

export CONTAINERS_CONF="$conf" CONTAINERS_STORAGE_CONF="$storage"
if [[ ${1:-} == --env ]]; then
  printf 'CONTAINERS_CONF=%s\nCONTAINERS_STORAGE_CONF=%s\n' "$conf" "$storage"
  exit 0
fi
exec podman "$@"
