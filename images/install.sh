#!/bin/sh
# The install steps of both images, in one place. images/<component>/Dockerfile runs it in its build stage;
# tests/chart/test_images.py runs it into a fresh venv (with UV set, for speed) and checks the result works.
#
#   sh images/install.sh operator|worker DEST [SRC]     (SRC: the repository checkout, default .)
#
# 1. a venv at DEST; 2. every dependency from the component's hashed lock, nothing resolved at build time
# (--no-deps --require-hashes) and a check that the lock is complete; 3. the terrasnap package itself, without
# dependencies (the operator's lock holds only what `terrasnap operator` imports, so the package's full
# dependency list is checked for the worker only); 4. `terrasnap --version`.
set -eu
component="$1"
dest="$2"
src="${3:-.}"
lock="$(dirname "$0")/$component/requirements.txt"
[ -f "$lock" ] || { echo "install.sh: no lock $lock" >&2; exit 2; }
python="${PYTHON:-python3}"

if [ -n "${UV:-}" ]; then
  "$UV" venv --quiet --python "$python" "$dest"
  # --compile-bytecode: the image runs with PYTHONDONTWRITEBYTECODE, so without it every pod compiles DVC,
  # pandas and GDAL's bindings from source at start-up (seconds); pip compiles by default
  VIRTUAL_ENV="$dest" "$UV" pip install --quiet --no-deps --compile-bytecode --require-hashes -r "$lock"
  VIRTUAL_ENV="$dest" "$UV" pip check --quiet
  VIRTUAL_ENV="$dest" "$UV" pip install --quiet --no-deps --compile-bytecode "$src"
  if [ "$component" = worker ]; then VIRTUAL_ENV="$dest" "$UV" pip check --quiet; fi
else
  "$python" -m venv "$dest"
  "$dest/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
  "$dest/bin/pip" check
  "$dest/bin/pip" install --quiet --disable-pip-version-check --no-deps "$src"
  if [ "$component" = worker ]; then "$dest/bin/pip" check; fi
  # The final image gets the venv only: no pip in it.
  "$dest/bin/pip" uninstall --quiet --yes pip
fi
"$dest/bin/terrasnap" --version
