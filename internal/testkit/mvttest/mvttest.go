// Package mvttest writes Mapbox Vector Tiles for tests: one small feature
// per named layer, encoded by orb's full MVT encoder.
package mvttest

import (
	"github.com/paulmach/orb"
	"github.com/paulmach/orb/encoding/mvt"
	"github.com/paulmach/orb/geojson"
)

// Layers are the named layers, each with a point carrying its name and
// rank, and a line.
func Layers(names ...string) mvt.Layers {
	var layers mvt.Layers
	for i, n := range names {
		fc := geojson.NewFeatureCollection()
		p := geojson.NewFeature(orb.Point{float64(10 * i), 20})
		p.Properties["name"] = n
		p.Properties["rank"] = i
		fc.Append(p)
		fc.Append(geojson.NewFeature(orb.LineString{{0, 0}, {float64(100 + i), 4000}}))
		layers = append(layers, &mvt.Layer{Name: n, Version: 2, Extent: 4096, Features: fc.Features})
	}
	return layers
}

// Tile is a tile of the named layers; gzip'd when gzipped is set.
func Tile(gzipped bool, names ...string) []byte {
	var b []byte
	var err error
	if gzipped {
		b, err = mvt.MarshalGzipped(Layers(names...))
	} else {
		b, err = mvt.Marshal(Layers(names...))
	}
	if err != nil {
		panic(err) // the layers above always encode
	}
	return b
}
