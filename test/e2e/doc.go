// Package e2e holds the browser tests: real map libraries (Leaflet,
// MapLibre GL, OpenLayers) and plain <img> pages in headless Chromium
// against tileproxy on MinIO. It has no code of its own.
package e2e
