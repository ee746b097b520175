#!/usr/bin/env bash
# `make images`: build the operator and worker images with Docker (BuildKit), tagged
# ${REGISTRY:-ghcr.io/terrasnap}/<component>:<version>. The base image is pinned by digest in
# images/base-image.txt; a reference without a digest there is resolved once and recorded (commit the file).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "make images: no Docker engine reachable (docker info failed), nothing built." >&2
  echo "  Without one, 'make test-chart' lints the Dockerfiles (hadolint) and runs their install steps" >&2
  echo "  (images/install.sh with the same locks) into fresh venvs." >&2
  exit 1
fi
ref="$(grep -v '^#' images/base-image.txt | head -1)"
if [[ "$ref" != *@sha256:* ]]; then
  digest="$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest}}' \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')"
  ref="$ref@$digest"
  echo "$ref" > images/base-image.txt
  echo "make images: pinned the base image in images/base-image.txt ($ref): commit it" >&2
fi
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
for component in operator worker; do
  tag="${REGISTRY:-ghcr.io/terrasnap}/$component:$version"
  DOCKER_BUILDKIT=1 docker build -f "images/$component/Dockerfile" \
    --build-arg PYTHON_IMAGE="${ref%@*}" --build-arg PYTHON_DIGEST="${ref#*@}" --build-arg VERSION="$version" \
    -t "$tag" .
  echo "make images: built $tag"
done
