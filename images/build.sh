#!/usr/bin/env bash
# `make images`: build the operator and worker images with podman (no Docker engine), from Debian bases made by
# mmdebstrap (images/base.sh) and the hashed PyPI locks (images/<component>/requirements.txt):
#
#   bash images/build.sh [operator|worker ...]      both by default
#
# Each image is tagged localhost/terrasnap/<component>:<version> and :<inputs>, where <inputs> hashes everything
# the build reads (the Dockerfile, the scripts, the locks, the sources it copies, the base's lock). A second run
# with the same inputs loads or finds the image and costs seconds. With REGISTRY set (e.g. ghcr.io/terrasnap),
# the image is also tagged $REGISTRY/<component>:<version>, ready for `podman push`.
#
# Next to each image, in ${TERRASNAP_CACHE:-~/.cache/terrasnap}/images/: <component>-<inputs>.oci.tar (the
# image as an OCI archive, `podman load -i` takes it), .sbom.cdx.json (CycloneDX: every Debian package and
# Python distribution in the image) and .json (tags, size, labels). The last line per image says where.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
podman=(bash "$repo/images/podman.sh")
cache="${TERRASNAP_CACHE:-$HOME/.cache/terrasnap}/images"
mkdir -p "$cache"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
revision="$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)"
if [[ $revision != unknown && -n "$(git status --porcelain -- operator images pyproject.toml README.md 2>/dev/null)" ]]; then
  revision="$revision-dirty"
fi
components=("$@")
((${#components[@]})) || components=(operator worker)

inputs() { # the files the Dockerfile copies or binds (its .dockerignore's allow-list), and how it is built
  local component="$1"
  {
    printf '%s\n' "images/$component/Dockerfile" "images/$component/Dockerfile.dockerignore" images/install.sh \
      images/runtime.sh "images/$component/requirements.txt" pyproject.toml README.md images/build.sh images/sbom.py
    find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*'
  } | LC_ALL=C sort | xargs sha256sum
}

for component in "${components[@]}"; do
  [[ -f images/$component/Dockerfile ]] || { echo "images/build.sh: no component $component" >&2; exit 2; }
  build_base="$(bash images/base.sh build)"
  base="$(bash images/base.sh "$component")"
  hash="$( { inputs "$component"; echo "$build_base $base"; } | sha256sum | cut -c1-16)"
  ref="localhost/terrasnap/$component"
  out="$cache/$component-$hash"
  exec 9>"$cache/$component.lock"
  flock 9
  if ! "${podman[@]}" image exists "$ref:$hash"; then
    if [[ -f $out.oci.tar && -f $out.sbom.cdx.json ]]; then
      "${podman[@]}" load --quiet -i "$out.oci.tar" >/dev/null
    else
      start=$SECONDS
      echo "images/build.sh: building $component (inputs $hash)" >&2
      # --network host: the build stage downloads the locked wheels (hash-checked) from the package index,
      # trusting what this machine's pip trusts (PIP_CERT or SSL_CERT_FILE, e.g. a proxy's CA) if it says so.
      secret=()
      ca="${PIP_CERT:-${SSL_CERT_FILE:-}}"
      if [[ -n $ca && -s $ca ]]; then secret=(--secret "id=ca-bundle,src=$ca"); fi
      "${podman[@]}" build "${secret[@]}" --quiet --network host --layers \
        -f "images/$component/Dockerfile" --ignorefile "images/$component/Dockerfile.dockerignore" \
        --build-arg BUILD_BASE="$build_base" --build-arg BASE="$base" --build-arg VERSION="$version" \
        --label org.opencontainers.image.revision="$revision" \
        --label io.terrasnap.inputs="$hash" \
        --label io.terrasnap.base="$base" --label io.terrasnap.build-base="$build_base" \
        --label io.terrasnap.requirements="sha256:$(sha256sum "images/$component/requirements.txt" | cut -d' ' -f1)" \
        -t "$ref:$hash" . >/dev/null
      "${podman[@]}" run --rm --network none --read-only --user 65532:65532 --cap-drop ALL \
        --entrypoint /opt/terrasnap/bin/python -v "$repo/images/sbom.py:/sbom.py:ro" \
        "$ref:$hash" /sbom.py "$component" "$version" >"$out.sbom.cdx.json.partial"
      rm -f "$out.oci.tar.partial"
      "${podman[@]}" save --quiet --format oci-archive -o "$out.oci.tar.partial" "$ref:$hash"
      mv "$out.sbom.cdx.json.partial" "$out.sbom.cdx.json"
      mv "$out.oci.tar.partial" "$out.oci.tar"
      echo "images/build.sh: built $component in $((SECONDS - start)) s" >&2
    fi
  fi
  "${podman[@]}" tag "$ref:$hash" "$ref:$version"
  if [[ -n ${REGISTRY:-} ]]; then "${podman[@]}" tag "$ref:$hash" "$REGISTRY/$component:$version"; fi
  "${podman[@]}" image inspect --format '{"image":"'"$ref:$version"'","inputs":"'"$hash"'","id":"{{.Id}}","size":{{.Size}},"labels":{{json .Labels}}}' \
    "$ref:$hash" >"$out.json"
  size="$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["size"] / 1e6))' "$out.json")"
  # The cache keeps the three newest builds of each component (another checkout's may be among them).
  ls -t "$cache/$component"-*.oci.tar 2>/dev/null | tail -n +4 | while read -r old; do
    rm -f "$old" "${old%.oci.tar}.sbom.cdx.json" "${old%.oci.tar}.json"
    old_hash="${old##*/$component-}"; old_hash="${old_hash%.oci.tar}"
    "${podman[@]}" rmi --force "$ref:$old_hash" >/dev/null 2>&1 || true
  done
  flock -u 9
  echo "images/build.sh: $ref:$version ($hash) ${size} MB; archive $out.oci.tar, SBOM $out.sbom.cdx.json"
done
