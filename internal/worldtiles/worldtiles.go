// Package worldtiles is the demo's vector tileset of real geography: the
// world's countries (Natural Earth 1:110m, public domain, via world-atlas;
// testdata/world) as one PMTiles archive of gzip'd Mapbox Vector Tiles,
// layer "countries" with a "name" property, zoom 0 to 5. The archive is
// generated (tools/worldtiles, `go generate ./tools/worldtiles`) and embedded,
// so the demo binary needs no files beside it.
package worldtiles

import _ "embed"

// Archive is the PMTiles archive.
//
//go:embed countries.pmtiles
var Archive []byte
