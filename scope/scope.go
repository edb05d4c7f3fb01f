// Package scope judges a tile against the scoped grants of one principal
// on one tileset (docs/entitlements.md): zoom ranges, bounding boxes,
// named areas and vector layers. Within one grant every constraint
// applies (zoom and bbox and any one of its areas); across grants a tile
// is allowed when any grant allows it, and the layers sent are the union
// of the layers of the grants that allow it.
package scope

import (
	"math"
	"slices"
	"strings"

	"github.com/paulmach/orb"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
)

// Grant is one compiled scope. The zero Grant allows everything; a nil
// []Grant stands for an unscoped grant (the whole tileset).
type Grant struct {
	zmin, zmax uint8
	// boxes are the bbox, split in two when it crosses the antimeridian;
	// none: no bbox constraint.
	boxes []orb.Bound
	// tboxes are boxes in Web Mercator tile space ([0,1]², y down), so
	// that a request compares numbers instead of computing its tile's
	// bounds in degrees.
	tboxes []tbox
	// areas: any one of them; none: no area constraint.
	areas []*area.Area
	// layers are the vector layers sent, sorted; nil: every layer.
	layers []string
}

// Compile checks s against the configured areas and compiles it.
func Compile(s config.Scope, areas area.Set) (Grant, error) {
	if err := s.Validate(areas.Has); err != nil {
		return Grant{}, err
	}
	lo, hi, _ := s.ZoomRange()
	g := Grant{zmin: uint8(lo), zmax: uint8(hi)}
	if b := s.BBox; len(b) == 4 {
		if b[0] <= b[2] {
			g.boxes = []orb.Bound{{Min: orb.Point{b[0], b[1]}, Max: orb.Point{b[2], b[3]}}}
		} else { // across the antimeridian
			g.boxes = []orb.Bound{
				{Min: orb.Point{b[0], b[1]}, Max: orb.Point{180, b[3]}},
				{Min: orb.Point{-180, b[1]}, Max: orb.Point{b[2], b[3]}},
			}
		}
	}
	for _, b := range g.boxes {
		g.tboxes = append(g.tboxes, toTileSpace(b))
	}
	for _, name := range s.Areas {
		g.areas = append(g.areas, areas[name])
	}
	if len(s.Layers) > 0 {
		g.layers = slices.Compact(slices.Sorted(slices.Values(s.Layers)))
	}
	return g, nil
}

// Layers are the layers g sends; nil for every layer.
func (g *Grant) Layers() []string { return g.layers }

// allows reports whether g allows tile z/x/y.
func (g *Grant) allows(z uint8, x, y uint32) bool {
	if z < g.zmin || z > g.zmax {
		return false
	}
	if len(g.tboxes) > 0 {
		scale := float64(uint64(1) << z)
		x0, x1 := float64(x)/scale, float64(x+1)/scale
		y0, y1 := float64(y)/scale, float64(y+1)/scale
		in := false
		for _, b := range g.tboxes {
			// The tile's bounds meet the box's interior: an overlap of
			// positive area, not a shared side.
			if x0 < b.x1 && x1 > b.x0 && y0 < b.y1 && y1 > b.y0 {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	if len(g.areas) == 0 {
		return true
	}
	for _, a := range g.areas {
		if a.Intersects(z, x, y) {
			return true
		}
	}
	return false
}

// tbox is a box in Web Mercator tile space: x and y in [0, 1], y down.
type tbox struct{ x0, x1, y0, y1 float64 }

// toTileSpace maps a box in degrees to tile space. Latitudes beyond Web
// Mercator's ±85.0511° clamp to its edge.
func toTileSpace(b orb.Bound) tbox {
	tx := func(lon float64) float64 { return (lon + 180) / 360 }
	ty := func(lat float64) float64 {
		lat = max(-85.05112877980659, min(85.05112877980659, lat))
		r := lat * math.Pi / 180
		return (1 - math.Log(math.Tan(r)+1/math.Cos(r))/math.Pi) / 2
	}
	return tbox{x0: tx(b.Min[0]), x1: tx(b.Max[0]), y0: ty(b.Max[1]), y1: ty(b.Min[1])}
}

// Judge reports whether any of gs allows tile z/x/y and which layers go
// with it: nil for every layer. A nil gs is an unscoped grant.
func Judge(gs []Grant, z uint8, x, y uint32) (ok bool, layers []string) {
	if gs == nil {
		return true, nil
	}
	var union []string
	for i := range gs {
		g := &gs[i]
		if !g.allows(z, x, y) {
			continue
		}
		if g.layers == nil {
			return true, nil
		}
		switch {
		case !ok:
			union = g.layers // shared, never written
		case !slices.Equal(union, g.layers):
			union = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(union), g.layers...))))
		}
		ok = true
	}
	return ok, union
}

// LayerKey is the form of a layer set used in cache keys and ETags.
func LayerKey(layers []string) string { return strings.Join(layers, ",") }

// Narrowed is what TileJSON may say of a tileset to a principal holding
// gs: the zooms and bounds its grants reach, and the vector layers they
// send (nil: every layer).
type Narrowed struct {
	MinZoom, MaxZoom int
	// Bounds is [west, south, east, north]; nil when unconstrained.
	Bounds []float64
	Layers []string
	// AllLayers is set when some grant sends every layer.
	AllLayers bool
}

// Narrow summarises gs for TileJSON. Bounds are the union of each
// grant's extent (its bbox, clipped to the union of its areas' bounds).
func Narrow(gs []Grant) Narrowed {
	n := Narrowed{MinZoom: math.MaxInt, MaxZoom: -1}
	var union orb.Bound
	bounded, have := true, false
	for i := range gs {
		g := &gs[i]
		n.MinZoom, n.MaxZoom = min(n.MinZoom, int(g.zmin)), max(n.MaxZoom, int(g.zmax))
		if g.layers == nil {
			n.AllLayers = true
		} else {
			n.Layers = append(n.Layers, g.layers...)
		}
		ext, ok := g.extent()
		if !ok {
			bounded = false
			continue
		}
		if !have {
			union, have = ext, true
		} else {
			union = union.Union(ext)
		}
	}
	if bounded && len(gs) > 0 {
		n.Bounds = []float64{union.Min[0], union.Min[1], union.Max[0], union.Max[1]}
	}
	n.Layers = slices.Compact(slices.Sorted(slices.Values(n.Layers)))
	return n
}

// extent is the part of the world g can allow, as a box; false when g
// has no spatial constraint. A bbox across the antimeridian is widened
// to every longitude (TileJSON bounds cannot cross it).
func (g *Grant) extent() (orb.Bound, bool) {
	var ext orb.Bound
	have := false
	switch len(g.boxes) {
	case 1:
		ext, have = g.boxes[0], true
	case 2:
		ext, have = orb.Bound{Min: orb.Point{-180, g.boxes[0].Min[1]}, Max: orb.Point{180, g.boxes[0].Max[1]}}, true
	}
	if len(g.areas) > 0 {
		ab := g.areas[0].Bound()
		for _, a := range g.areas[1:] {
			ab = ab.Union(a.Bound())
		}
		if have {
			ext = intersect(ext, ab)
		} else {
			ext, have = ab, true
		}
	}
	return ext, have
}

func intersect(a, b orb.Bound) orb.Bound {
	r := orb.Bound{Min: orb.Point{max(a.Min[0], b.Min[0]), max(a.Min[1], b.Min[1])}, Max: orb.Point{min(a.Max[0], b.Max[0]), min(a.Max[1], b.Max[1])}}
	if r.Min[0] > r.Max[0] || r.Min[1] > r.Max[1] {
		return orb.Bound{Min: a.Min, Max: a.Min}
	}
	return r
}
