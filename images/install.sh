#!/bin/sh
# The install steps of both images, in one place. images/<component>/Dockerfile runs it in its build stage;
# tests/images runs the images it makes.
#
#   sh images/install.sh operator|worker DEST [SRC]     (SRC: the repository checkout, default .)
#
# 1. a venv at DEST; 2. every dependency from the component's hashed lock, nothing resolved at build time
# (--no-deps --require-hashes) and a check that the lock is complete; 3. the terrasnap package itself, without
# dependencies (the operator's lock holds only what `terrasnap operator` imports, so the package's full
# dependency list is checked for the worker only); 4. what no import needs removed; 5. `terrasnap --version`.
set -eu
component="$1"
dest="$2"
src="${3:-.}"
lock="$(dirname "$0")/$component/requirements.txt"
[ -f "$lock" ] || { echo "install.sh: no lock $lock" >&2; exit 2; }
python="${PYTHON:-python3}"

"$python" -m venv "$dest"
"$dest/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$lock"
"$dest/bin/pip" check
"$dest/bin/pip" install --quiet --disable-pip-version-check --no-deps "$src"
if [ "$component" = worker ]; then "$dest/bin/pip" check; fi
# The final image gets the venv only: no pip in it, nor the setuptools venv brings unless the lock wants it.
grep -q '^setuptools==' "$lock" || "$dest/bin/pip" uninstall --quiet --yes setuptools
"$dest/bin/pip" uninstall --quiet --yes pip
# 4. What no import needs, left out of the image: the dependencies' own test suites, C headers and Cython
# sources (pandas, numpy, pyarrow, shapely and networkx ship ~80 MB of them). Nothing that is imported goes:
# the image tests run a real snapshot, and `pip check` above saw the distributions whole.
site="$(echo "$dest"/lib/python3*/site-packages)"
find "$site" -depth -type d -name tests ! -path "$site/terrasnap/*" -exec rm -rf {} +
rm -rf "$site/pyarrow/include" "$site/numpy/_core/include" "$site/pyarrow/src"
# kubernetes/aio: the client's asyncio twin (68 MB) that nothing imports: `import kubernetes` does not, kopf
# speaks to the API with aiohttp, and terrasnap.kube uses the synchronous client.
rm -rf "$site/kubernetes/aio"
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.h' -o -name '*.hpp' \
  -o -name '*.cc' -o -name '*.cpp' \) -delete
"$dest/bin/terrasnap" --version
