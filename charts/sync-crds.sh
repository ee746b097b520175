#!/usr/bin/env bash
# Copy the CustomResourceDefinitions from crds/ (the one source of truth) into the chart's crds/ folder.
# Helm cannot follow symlinks reliably in packaged charts, so the chart carries byte-equal copies;
# tests/chart/test_chart.py fails when they drift. Run after any change to crds/:  bash charts/sync-crds.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo/charts/terrasnap/crds"
mkdir -p "$dest"
# Remove copies whose source is gone (kopf's peering CRD is the chart's own file and stays).
for f in "$dest"/terrasnap.io_*.yaml; do
  [[ -e "$f" ]] || continue
  [[ -e "$repo/crds/$(basename "$f")" ]] || rm -v "$f"
done
for f in "$repo"/crds/*.yaml; do
  cp "$f" "$dest/$(basename "$f")"
done
echo "sync-crds: $(ls "$repo"/crds/*.yaml | wc -l) CRD(s) copied into charts/terrasnap/crds/"
