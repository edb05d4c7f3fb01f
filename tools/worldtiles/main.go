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
	"encoding/json"
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
	fc, err := countries(data)
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

// topology is the part of TopoJSON world-atlas uses: quantized,
// delta-encoded arcs, and polygons and multipolygons as lists of arc
// indexes (a negative index ~i is arc i reversed). No Go module for
// TopoJSON is served here; the format is small.
type topology struct {
	Transform struct {
		Scale     [2]float64 `json:"scale"`
		Translate [2]float64 `json:"translate"`
	} `json:"transform"`
	Arcs    [][][2]float64 `json:"arcs"`
	Objects struct {
		Countries struct {
			Geometries []struct {
				Type       string          `json:"type"`
				Arcs       json.RawMessage `json:"arcs"`
				Properties map[string]any  `json:"properties"`
			} `json:"geometries"`
		} `json:"countries"`
	} `json:"objects"`
}

// countries decodes world-atlas's countries object into lon/lat features.
func countries(data []byte) (*geojson.FeatureCollection, error) {
	var topo topology
	if err := json.Unmarshal(data, &topo); err != nil {
		return nil, err
	}
	// Undo the delta encoding and the quantization once per arc.
	arcs := make([][]orb.Point, len(topo.Arcs))
	for i, a := range topo.Arcs {
		var x, y float64
		for _, p := range a {
			x += p[0]
			y += p[1]
			arcs[i] = append(arcs[i], orb.Point{x*topo.Transform.Scale[0] + topo.Transform.Translate[0], y*topo.Transform.Scale[1] + topo.Transform.Translate[1]})
		}
	}
	ring := func(idx []int) orb.Ring {
		var r orb.Ring
		for _, i := range idx {
			var pts []orb.Point
			if i >= 0 {
				pts = arcs[i]
			} else {
				src := arcs[^i]
				for j := len(src) - 1; j >= 0; j-- {
					pts = append(pts, src[j])
				}
			}
			// Consecutive arcs share their end point.
			if len(r) > 0 {
				pts = pts[1:]
			}
			r = append(r, pts...)
		}
		return r
	}
	polygon := func(rings [][]int) orb.Polygon {
		var p orb.Polygon
		for _, idx := range rings {
			p = append(p, ring(idx))
		}
		return p
	}
	// A polygon across the antimeridian (Russia, Fiji) jumps from +180 to
	// -180 in plain lon/lat, which a tile would draw as a band across the
	// world. Unwrap it to continuous longitudes and add a copy shifted by
	// 360 degrees; clipping to each tile keeps what falls inside.
	unwrap := func(p orb.Polygon) orb.MultiPolygon {
		crossed := false
		for _, r := range p {
			off := 0.0
			for i := 1; i < len(r); i++ {
				d := r[i][0] + off - r[i-1][0]
				switch {
				case d > 180:
					off -= 360
					crossed = true
				case d < -180:
					off += 360
					crossed = true
				}
				r[i][0] += off
			}
		}
		if !crossed {
			return orb.MultiPolygon{p}
		}
		shift := 360.0
		if p.Bound().Max[0] > 180 {
			shift = -360
		}
		q := orb.Clone(p).(orb.Polygon)
		for _, r := range q {
			for i := range r {
				r[i][0] += shift
			}
		}
		return orb.MultiPolygon{p, q}
	}
	fc := geojson.NewFeatureCollection()
	for _, g := range topo.Objects.Countries.Geometries {
		var geom orb.Geometry
		switch g.Type {
		case "Polygon":
			var rings [][]int
			if err := json.Unmarshal(g.Arcs, &rings); err != nil {
				return nil, err
			}
			geom = unwrap(polygon(rings))
		case "MultiPolygon":
			var polys [][][]int
			if err := json.Unmarshal(g.Arcs, &polys); err != nil {
				return nil, err
			}
			var mp orb.MultiPolygon
			for _, rings := range polys {
				mp = append(mp, unwrap(polygon(rings))...)
			}
			geom = mp
		default:
			continue
		}
		f := geojson.NewFeature(geom)
		if name, ok := g.Properties["name"].(string); ok {
			f.Properties["name"] = name
		}
		fc.Append(f)
	}
	return fc, nil
}
