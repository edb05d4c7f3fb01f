package worldtiles

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
)

// TopoJSON is world-atlas's countries-110m.json (Natural Earth 1:110m,
// public domain; LICENSE-world-atlas), the source of the archive, kept so
// that the demo can build an area of one country at start.
//
//go:embed countries-110m.json
var TopoJSON []byte

// Country is the outline of the country called name in TopoJSON, as a
// GeoJSON Feature.
func Country(name string) ([]byte, error) {
	fc, err := Countries(TopoJSON)
	if err != nil {
		return nil, err
	}
	for _, f := range fc.Features {
		if f.Properties["name"] == name {
			return json.Marshal(f)
		}
	}
	return nil, fmt.Errorf("worldtiles: no country %q", name)
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

// Countries decodes world-atlas's countries object into lon/lat
// features, each with its "name".
func Countries(data []byte) (*geojson.FeatureCollection, error) {
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
