#!/bin/sh
# The final stage's one RUN step, whatever the base (images/<component>/Dockerfile binds it, nothing is left):
#
#   sh runtime.sh operator|worker
#
# `make images` uses Debian bases made by mmdebstrap (images/base.sh) that already hold every package, so this
# only adds the user; on a generic base (the Dockerfiles' default, python:3.11-slim-bookworm) it also installs
# git for the worker with that base's package manager.
set -eu
component="$1"
home=/tmp
if [ "$component" = worker ]; then
  home=/workspace
  if ! command -v git >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends git ca-certificates
    rm -rf /var/lib/apt/lists/*
  fi
fi
# A passwd entry for the numeric user: DVC and getpass.getuser() need one. No login shell.
grep -q '^terrasnap:' /etc/group || echo 'terrasnap:x:65532:' >>/etc/group
grep -q '^terrasnap:' /etc/passwd || echo "terrasnap:x:65532:65532:terrasnap:$home:/usr/sbin/nologin" >>/etc/passwd
mkdir -p "$home"
if [ "$home" != /tmp ]; then chown 65532:65532 "$home"; fi
# No installer in the final image: the base Python's own pip, if it has one (the venv's is removed at install).
for py in /usr/local/bin/python3 /usr/bin/python3.11; do
  if [ -x "$py" ] && "$py" -m pip --version >/dev/null 2>&1; then "$py" -m pip uninstall --quiet --yes pip setuptools wheel; fi
done
