// Package area reads the named areas grants can be scoped to (GeoJSON
// polygons in WGS 84) and answers, for a map tile, whether the tile's
// bounds meet the area's interior: exactly on the polygon, not on its
// bounding box, and fast enough for every request.
//
// An Area is indexed once, when loaded: a quadtree over Web Mercator
// tiles whose nodes are wholly outside, wholly inside, or on the boundary
// (a polygon edge crosses the tile's open bounds), refined until a
// boundary tile holds a handful of edges. A request walks down to its
// tile's node (a few pointer hops); only a tile deeper than a boundary
// leaf is tested against the leaf's edges, plus one point-in-polygon test
// that looks only at the edges in the point's latitude band.
package area

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/paulmach/orb/maptile"
	"github.com/paulmach/orb/planar"
)

// MaxVertices bounds one area: a country outline at full detail is a few
// tens of thousands of vertices.
const MaxVertices = 100_000

// MaxZoom is the deepest zoom the index refines to; deeper tiles are
// tested against the edges of their z22 ancestor.
const MaxZoom = 22

// leafEdges is how few edges a boundary node may hold and stop refining.
const leafEdges = 8

// ErrBadArea is matched by every error Parse and Load return for a file
// that is not a usable area.
var ErrBadArea = errors.New("bad area")

// Area is one named area, indexed. It is immutable and safe for
// concurrent use.
type Area struct {
	name  string
	bound orb.Bound
	edges []edge
	bands bands
	root  node
	nodes int
}

// edge is one polygon edge; poly numbers the polygon it belongs to, so
// that overlapping polygons of one area are a union, not an even-odd mix.
type edge struct {
	a, b orb.Point
	poly int32
}

// node is one tile of the index.
type node struct {
	kind  uint8    // outside, inside or boundary
	kids  *[4]node // a refined boundary node's children, by (y&1)*2 + x&1
	edges []int32  // a boundary leaf's edges (those touching its bounds)
}

const (
	outside uint8 = iota
	inside
	boundary
)

// Load reads and indexes the area name from a GeoJSON file.
func Load(name, path string) (*Area, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: area %s: %w", ErrBadArea, name, err)
	}
	return Parse(name, data)
}

// Parse reads and indexes a GeoJSON Polygon, MultiPolygon, Feature or
// FeatureCollection of those. Rings must be closed, have at least three
// distinct points and a non-zero area; coordinates are WGS 84 degrees.
func Parse(name string, data []byte) (*Area, error) {
	mp, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: area %s: %w", ErrBadArea, name, err)
	}
	if err := check(mp); err != nil {
		return nil, fmt.Errorf("%w: area %s: %w", ErrBadArea, name, err)
	}
	a := &Area{name: name, bound: mp.Bound()}
	for pi, p := range mp {
		for _, r := range p {
			for i := 0; i+1 < len(r); i++ {
				a.edges = append(a.edges, edge{r[i], r[i+1], int32(pi)})
			}
		}
	}
	a.bands = newBands(a.edges, a.bound)
	all := make([]int32, len(a.edges))
	for i := range all {
		all[i] = int32(i)
	}
	a.build(&a.root, maptile.New(0, 0, 0), all)
	return a, nil
}

// decode reads the geometry out of any of the accepted GeoJSON shapes.
func decode(data []byte) (orb.MultiPolygon, error) {
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	var geoms []orb.Geometry
	switch head.Type {
	case "FeatureCollection":
		fc, err := geojson.UnmarshalFeatureCollection(data)
		if err != nil {
			return nil, fmt.Errorf("not a GeoJSON FeatureCollection: %w", err)
		}
		for _, f := range fc.Features {
			geoms = append(geoms, f.Geometry)
		}
	case "Feature":
		f, err := geojson.UnmarshalFeature(data)
		if err != nil {
			return nil, fmt.Errorf("not a GeoJSON Feature: %w", err)
		}
		geoms = append(geoms, f.Geometry)
	case "Polygon", "MultiPolygon":
		g, err := geojson.UnmarshalGeometry(data)
		if err != nil {
			return nil, fmt.Errorf("not a GeoJSON geometry: %w", err)
		}
		geoms = append(geoms, g.Geometry())
	default:
		return nil, fmt.Errorf("GeoJSON type %q: want a Polygon, MultiPolygon, Feature or FeatureCollection", head.Type)
	}
	var mp orb.MultiPolygon
	for i, g := range geoms {
		switch g := g.(type) {
		case orb.Polygon:
			mp = append(mp, g)
		case orb.MultiPolygon:
			mp = append(mp, g...)
		case nil:
			return nil, fmt.Errorf("feature %d has no geometry", i)
		default:
			return nil, fmt.Errorf("feature %d is a %s, not a Polygon or MultiPolygon", i, g.GeoJSONType())
		}
	}
	if len(mp) == 0 {
		return nil, errors.New("no polygon")
	}
	return mp, nil
}

// check refuses what the index cannot judge.
func check(mp orb.MultiPolygon) error {
	n := 0
	for pi, p := range mp {
		if len(p) == 0 {
			return fmt.Errorf("polygon %d has no ring", pi)
		}
		for ri, r := range p {
			n += len(r)
			if n > MaxVertices {
				return fmt.Errorf("more than %d vertices", MaxVertices)
			}
			for _, pt := range r {
				if math.IsNaN(pt[0]) || math.IsNaN(pt[1]) || pt[0] < -180 || pt[0] > 180 || pt[1] < -90 || pt[1] > 90 {
					return fmt.Errorf("polygon %d ring %d: coordinate %v is outside [-180, -90, 180, 90]", pi, ri, pt)
				}
			}
			if len(r) < 4 || !r.Closed() {
				return fmt.Errorf("polygon %d ring %d is not closed (its first and last points must be the same, with at least three others)", pi, ri)
			}
			if distinct(r) < 3 || planar.Area(r) == 0 {
				return fmt.Errorf("polygon %d ring %d is degenerate (no area)", pi, ri)
			}
		}
	}
	return nil
}

func distinct(r orb.Ring) int {
	pts := slices.Clone(r[:len(r)-1])
	slices.SortFunc(pts, func(a, b orb.Point) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	})
	return len(slices.Compact(pts))
}

// Name is the area's name in the configuration.
func (a *Area) Name() string { return a.name }

// Bound is the area's bounding box in degrees.
func (a *Area) Bound() orb.Bound { return a.bound }

// IndexBytes estimates the memory the area's index takes: the edges,
// latitude bands and quadtree nodes.
func (a *Area) IndexBytes() int64 {
	return int64(len(a.edges))*40 + a.bands.bytes() + int64(a.nodes)*48
}

// build classifies node n, for tile t, from the edges that touch t's
// parent, and refines a boundary node until it holds leafEdges or fewer.
func (a *Area) build(n *node, t maptile.Tile, parent []int32) {
	a.nodes++
	r := t.Bound()
	var touching []int32
	crossed := false
	for _, i := range parent {
		e := &a.edges[i]
		if touches(e.a, e.b, r) {
			touching = append(touching, i)
			crossed = crossed || crosses(e.a, e.b, r)
		}
	}
	if !crossed {
		n.kind = outside
		if a.inside(r.Center()) {
			n.kind = inside
		}
		return
	}
	n.kind = boundary
	if len(touching) <= leafEdges || t.Z >= MaxZoom {
		n.edges = touching
		return
	}
	n.kids = new([4]node)
	for j := range 4 {
		c := maptile.New(2*t.X+uint32(j&1), 2*t.Y+uint32(j>>1), t.Z+1)
		a.build(&n.kids[j], c, touching)
	}
}

// Intersects reports whether tile z/x/y's bounds meet the area's
// interior. A tile that only touches the area (at a corner, or along an
// edge) does not.
func (a *Area) Intersects(z uint8, x, y uint32) bool {
	n := &a.root
	nz := uint8(0)
	for {
		switch {
		case n.kind == outside:
			return false
		case n.kind == inside, nz == z:
			return true
		case n.kids == nil:
			return a.exact(n.edges, maptile.New(x, y, maptile.Zoom(z)))
		}
		shift := z - nz - 1
		n = &n.kids[(y>>shift&1)*2+x>>shift&1]
		nz++
	}
}

// exact judges tile t below a boundary leaf against the leaf's edges: an
// edge through its open bounds, or its centre inside (then all of it is).
func (a *Area) exact(edges []int32, t maptile.Tile) bool {
	r := t.Bound()
	for _, i := range edges {
		if crosses(a.edges[i].a, a.edges[i].b, r) {
			return true
		}
	}
	return a.inside(r.Center())
}

// inside reports whether p is inside some polygon of the area (even-odd
// over that polygon's rings, so holes are out). p must not lie on an edge;
// the callers only ask for points in open bounds no edge crosses.
func (a *Area) inside(p orb.Point) bool {
	list := a.bands.at(p[1])
	odd, poly := false, int32(-1)
	for _, i := range list {
		e := &a.edges[i]
		if e.poly != poly {
			if odd {
				return true
			}
			odd, poly = false, e.poly
		}
		if (e.a[1] > p[1]) != (e.b[1] > p[1]) {
			x := e.a[0] + (p[1]-e.a[1])*(e.b[0]-e.a[0])/(e.b[1]-e.a[1])
			if x > p[0] {
				odd = !odd
			}
		}
	}
	return odd
}

// clip is Liang-Barsky's clip of the segment a→b to the closed bounds r:
// the part's parameters, and false when the segment misses r.
func clip(a, b orb.Point, r orb.Bound) (t0, t1 float64, ok bool) {
	t0, t1 = 0, 1
	dx, dy := b[0]-a[0], b[1]-a[1]
	for _, pq := range [4][2]float64{{-dx, a[0] - r.Min[0]}, {dx, r.Max[0] - a[0]}, {-dy, a[1] - r.Min[1]}, {dy, r.Max[1] - a[1]}} {
		p, q := pq[0], pq[1]
		if p == 0 {
			if q < 0 {
				return 0, 0, false
			}
			continue
		}
		t := q / p
		if p < 0 {
			if t > t1 {
				return 0, 0, false
			}
			t0 = max(t0, t)
		} else {
			if t < t0 {
				return 0, 0, false
			}
			t1 = min(t1, t)
		}
	}
	return t0, t1, t0 <= t1
}

// touches reports whether a→b meets the closed bounds r.
func touches(a, b orb.Point, r orb.Bound) bool {
	_, _, ok := clip(a, b, r)
	return ok
}

// crosses reports whether a→b passes through the open bounds r: not
// just along its sides or through a corner. The part of the segment
// inside the closed bounds is a chord of a convex set, so it is in the
// interior exactly when its midpoint is.
func crosses(a, b orb.Point, r orb.Bound) bool {
	t0, t1, ok := clip(a, b, r)
	if !ok {
		return false
	}
	tm := (t0 + t1) / 2
	x, y := a[0]+tm*(b[0]-a[0]), a[1]+tm*(b[1]-a[1])
	return x > r.Min[0] && x < r.Max[0] && y > r.Min[1] && y < r.Max[1]
}

// bands index edges by latitude, so that a point-in-polygon test looks
// only at the edges whose latitude span holds the point's.
type bands struct {
	lo, step float64
	lists    [][]int32 // edge numbers, in polygon order
}

func newBands(edges []edge, b orb.Bound) bands {
	n := max(1, min(4096, len(edges)/4))
	bs := bands{lo: b.Min[1], step: (b.Max[1] - b.Min[1]) / float64(n), lists: make([][]int32, n)}
	if bs.step == 0 {
		bs.step = 1
	}
	for i, e := range edges {
		lo, hi := bs.index(min(e.a[1], e.b[1])), bs.index(max(e.a[1], e.b[1]))
		for k := lo; k <= hi; k++ {
			bs.lists[k] = append(bs.lists[k], int32(i))
		}
	}
	return bs
}

func (bs *bands) index(lat float64) int {
	return max(0, min(len(bs.lists)-1, int((lat-bs.lo)/bs.step)))
}

// at is the edges whose span may hold lat; none outside the area's bound.
func (bs *bands) at(lat float64) []int32 {
	if lat < bs.lo || lat > bs.lo+bs.step*float64(len(bs.lists)) {
		return nil
	}
	return bs.lists[bs.index(lat)]
}

func (bs *bands) bytes() int64 {
	n := int64(len(bs.lists)) * 24
	for _, l := range bs.lists {
		n += int64(cap(l)) * 4
	}
	return n
}

// Set is the areas of one configuration, by name.
type Set map[string]*Area

// LoadSet loads every area of a configuration: names to files (path maps
// a name to its file, relative paths resolved). Every problem is
// reported, each naming its area.
func LoadSet(names []string, path func(name string) string) (Set, error) {
	set := Set{}
	var errs []error
	for _, name := range names {
		a, err := Load(name, path(name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		set[name] = a
	}
	return set, errors.Join(errs...)
}

// Has reports whether name is in the set.
func (s Set) Has(name string) bool { _, ok := s[name]; return ok }
