// Command worldtiles writes internal/worldtiles/countries.pmtiles, the demo's
// vector tileset of real geography: the world's countries from
// world-atlas (Natural Earth 1:110m, public domain), cut into Mapbox
// Vector Tiles with github.com/paulmach/orb and written as a PMTiles
// archive with go-pmtiles' serializers.
//
//	go generate ./tools/worldtiles
package main

//go:generate go run . -in ../../testdata/world/countries-110m.json -out ../../internal/worldtiles/countries.pmtiles

import (
	"flag"
	"fmt"
	"log"
	"os"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/encoding/mvt"
	"github.com/paulmach/orb/geojson"
	"github.com/paulmach/orb/maptile"
	"github.com/paulmach/orb/simplify"
	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/worldtiles"
)

// maxZoom is the deepest zoom cut: 1:110m data has nothing finer to show.
const maxZoom = 5

func main() {
	in := flag.String("in", "testdata/world/countries-110m.json", "world-atlas TopoJSON")
	out := flag.String("out", "internal/worldtiles/countries.pmtiles", "archive to write")
	flag.Parse()
	data, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	fc, err := worldtiles.Countries(data)
	if err != nil {
		log.Fatal(err)
	}
	tiles := map[pmtiles.Zxy][]byte{}
	for z := maptile.Zoom(0); z <= maxZoom; z++ {
		for x := uint32(0); x < 1<<z; x++ {
			for y := uint32(0); y < 1<<z; y++ {
				t := maptile.New(x, y, z)
				b, err := tile(fc, t)
				if err != nil {
					log.Fatal(err)
				}
				if b != nil {
					tiles[pmtiles.Zxy{Z: uint8(z), X: x, Y: y}] = b
				}
			}
		}
	}
	arc := archivetest.Build(tiles, archivetest.Options{
		TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Gzip: true, MaxZoom: maxZoom,
		Metadata: map[string]any{
			"name":          "World countries",
			"attribution":   "Natural Earth (public domain), via world-atlas",
			"vector_layers": []any{map[string]any{"id": "countries", "fields": map[string]any{"name": "String"}, "minzoom": 0, "maxzoom": maxZoom}},
		},
	})
	if err := os.WriteFile(*out, arc, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d tiles, %d bytes\n", len(tiles), len(arc))
}

// tile cuts the countries into tile t: gzip'd MVT, or nil when empty.
func tile(fc *geojson.FeatureCollection, t maptile.Tile) ([]byte, error) {
	// A margin of a sixteenth of the tile keeps outlines from showing
	// at tile edges.
	b := t.Bound(0)
	pad := (b.Max[0] - b.Min[0]) / 16
	b = b.Pad(pad)
	part := geojson.NewFeatureCollection()
	for _, f := range fc.Features {
		if f.Geometry.Bound().Intersects(b) {
			g := orb.Clone(f.Geometry)
			nf := geojson.NewFeature(g)
			nf.Properties = f.Properties
			part.Append(nf)
		}
	}
	if len(part.Features) == 0 {
		return nil, nil
	}
	layers := mvt.NewLayers(map[string]*geojson.FeatureCollection{"countries": part})
	layers.ProjectToTile(t)
	layers.Clip(mvt.MapboxGLDefaultExtentBound)
	layers.Simplify(simplify.DouglasPeucker(1.0))
	layers.RemoveEmpty(1.0, 1.0)
	if len(layers[0].Features) == 0 {
		return nil, nil
	}
	return mvt.MarshalGzipped(layers)
}
