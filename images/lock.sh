#!/usr/bin/env bash
# Regenerate the images' pinned, hashed requirement locks:
#   images/worker/requirements.txt    every runtime dependency of pyproject.toml (the engine + GDAL wheels)
#   images/operator/requirements.txt  images/operator/requirements.in (what `terrasnap operator` imports)
# Versions follow the project venv (the ones the tests ran with) where it has them. Needs `make venv`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
uv=".venv/bin/uv"
freeze="$(mktemp)"; trap 'rm -f "$freeze"' EXIT
"$uv" pip freeze --python .venv/bin/python | grep -v -e '^-e ' -e '^terrasnap' > "$freeze"
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header
        --annotation-style line -c "$freeze")
"$uv" pip compile "${common[@]}" pyproject.toml -o images/worker/requirements.txt
"$uv" pip compile "${common[@]}" images/operator/requirements.in -o images/operator/requirements.txt
# The constraint file's temporary path is noise in the annotations.
sed -i -e "s#-c $freeze, ##g" -e "s#, -c $freeze##g" -e "s#  \# via -c $freeze\$##" images/*/requirements.txt
echo "lock.sh: $(grep -c '==' images/worker/requirements.txt) worker, $(grep -c '==' images/operator/requirements.txt) operator pins"
