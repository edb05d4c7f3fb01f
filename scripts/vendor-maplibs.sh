#!/usr/bin/env bash
# Re-vendors the map libraries from npm at the pinned versions, with their
# licences (see testdata/e2e/vendor/VERSIONS). Needs npm; not run by tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack leaflet@1.9.4 maplibre-gl@5.24.1 ol@10.11.0 --silent >/dev/null)
for f in "$tmp"/*.tgz; do d="${f%.tgz}"; mkdir -p "$d"; tar xzf "$f" -C "$d"; done
cp "$tmp"/leaflet-1.9.4/package/dist/leaflet.{js,css} "$tmp"/leaflet-1.9.4/package/LICENSE proxy/viewer/vendor/leaflet/
cp "$tmp"/maplibre-gl-5.24.1/package/dist/maplibre-gl.{js,css} "$tmp"/maplibre-gl-5.24.1/package/LICENSE.txt testdata/e2e/vendor/maplibre-gl/
cp "$tmp"/ol-10.11.0/package/dist/ol.js "$tmp"/ol-10.11.0/package/ol.css "$tmp"/ol-10.11.0/package/LICENSE.md testdata/e2e/vendor/ol/
(cd "$tmp" && sha256sum ./*.tgz)
