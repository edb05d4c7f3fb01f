package area

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/paulmach/orb/maptile"
	"github.com/paulmach/orb/planar"
)

func polygonJSON(t *testing.T, p orb.Polygon) []byte {
	t.Helper()
	b, err := json.Marshal(geojson.NewGeometry(p))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t *testing.T, data []byte) *Area {
	t.Helper()
	a, err := Parse("t", data)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func box(b orb.Bound) orb.Ring {
	return orb.Ring{b.Min, {b.Max[0], b.Min[1]}, b.Max, {b.Min[0], b.Max[1]}, b.Min}
}

// TestIntersectsAtTileEdges: a tile is inside when its bounds meet the
// area's interior, judged on the polygon itself.
func TestIntersectsAtTileEdges(t *testing.T) {
	z10 := maptile.New(500, 300, 10)
	b := z10.Bound()
	// A square whose corner is exactly the tile's north-east corner.
	cornerSq := orb.Polygon{box(orb.Bound{Min: b.Max, Max: orb.Point{b.Max[0] + 1, b.Max[1] + 1}})}
	// A square sharing the tile's east side.
	sideSq := orb.Polygon{box(orb.Bound{Min: orb.Point{b.Max[0], b.Min[1]}, Max: orb.Point{b.Max[0] + 1, b.Max[1]}})}
	// A concave "U" whose bbox holds the tile, the tile in its notch.
	w, h := b.Max[0]-b.Min[0], b.Max[1]-b.Min[1]
	u := orb.Polygon{{
		{b.Min[0] - w, b.Min[1] - h}, {b.Max[0] + w, b.Min[1] - h}, {b.Max[0] + w, b.Max[1] + h},
		{b.Max[0] + w/2, b.Max[1] + h}, {b.Max[0] + w/2, b.Min[1] - h/2}, {b.Min[0] - w/2, b.Min[1] - h/2},
		{b.Min[0] - w/2, b.Max[1] + h}, {b.Min[0] - w, b.Max[1] + h}, {b.Min[0] - w, b.Min[1] - h},
	}}
	// A big square with a hole that holds the tile exactly.
	outer := box(orb.Bound{Min: orb.Point{b.Min[0] - 5, b.Min[1] - 5}, Max: orb.Point{b.Max[0] + 5, b.Max[1] + 5}})
	hole := box(b)
	hole.Reverse()
	holed := orb.Polygon{outer, hole}
	// A sliver inside the tile: the polygon entirely within it.
	c := b.Center()
	sliver := orb.Polygon{box(orb.Bound{Min: orb.Point{c[0] - w/100, c[1] - h/100}, Max: orb.Point{c[0] + w/100, c[1] + h/100}})}
	world := orb.Polygon{box(orb.Bound{Min: orb.Point{-180, -90}, Max: orb.Point{180, 90}})}
	for _, tc := range []struct {
		name string
		poly orb.Polygon
		tile maptile.Tile
		want bool
	}{
		{"touches at a corner only", cornerSq, z10, false},
		{"the corner's neighbour overlaps", cornerSq, maptile.New(501, 299, 10), true},
		{"shares a side only", sideSq, z10, false},
		{"the side's neighbour is inside", sideSq, maptile.New(501, 300, 10), true},
		{"in a concave notch, inside the bbox", u, z10, false},
		{"on the concave arm", u, maptile.New(499, 300, 10), true},
		{"in the hole exactly", holed, z10, false},
		{"beside the hole", holed, maptile.New(501, 300, 10), true},
		{"a child in the hole", holed, maptile.New(1000, 600, 11), false},
		{"polygon inside the tile", sliver, z10, true},
		{"polygon inside the tile, z0", sliver, maptile.New(0, 0, 0), true},
		{"a neighbour of the sliver's tile", sliver, maptile.New(501, 300, 10), false},
		{"the world at z0", world, maptile.New(0, 0, 0), true},
		{"the world at z22", world, maptile.New(1<<21+7, 1<<21-3, 22), true},
		{"sliver's centre at z22", sliver, maptile.At(c, 22), true},
		{"sliver's outside at z22", sliver, maptile.At(orb.Point{c[0] + w/50, c[1]}, 22), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustParse(t, polygonJSON(t, tc.poly))
			if got := a.Intersects(uint8(tc.tile.Z), tc.tile.X, tc.tile.Y); got != tc.want {
				t.Fatalf("tile %d/%d/%d: %v, want %v", tc.tile.Z, tc.tile.X, tc.tile.Y, got, tc.want)
			}
		})
	}
}

// TestIntersectsMatchesBruteForce: for a jagged polygon with a hole, at
// every zoom to 14, the index agrees with testing the polygon directly
// (an edge through the tile's open bounds, or its centre inside).
func TestIntersectsMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var ring orb.Ring
	for i := range 300 {
		ang := float64(i) / 300 * 2 * math.Pi
		r := 8 + rng.Float64()*4
		ring = append(ring, orb.Point{10 + r*math.Cos(ang), 45 + r*0.7*math.Sin(ang)})
	}
	ring = append(ring, ring[0])
	holeRing := box(orb.Bound{Min: orb.Point{8, 44}, Max: orb.Point{12, 46}})
	holeRing.Reverse()
	poly := orb.Polygon{ring, holeRing}
	a := mustParse(t, polygonJSON(t, poly))
	brute := func(tl maptile.Tile) bool {
		r := tl.Bound()
		for _, rg := range poly {
			for i := 0; i+1 < len(rg); i++ {
				if crosses(rg[i], rg[i+1], r) {
					return true
				}
			}
		}
		return planar.PolygonContains(poly, r.Center())
	}
	checked := 0
	for z := maptile.Zoom(0); z <= 14; z++ {
		for range 400 {
			p := orb.Point{-5 + rng.Float64()*30, 30 + rng.Float64()*30}
			tl := maptile.At(p, z)
			if got, want := a.Intersects(uint8(z), tl.X, tl.Y), brute(tl); got != want {
				t.Fatalf("tile %d/%d/%d: index %v, polygon %v", z, tl.X, tl.Y, got, want)
			}
			checked++
		}
	}
	t.Logf("%d tiles agree; index of %d nodes, ~%d KiB", checked, a.nodes, a.IndexBytes()>>10)
}

// TestMultiPolygonIsAUnion: overlapping polygons of one area count their
// overlap as inside.
func TestMultiPolygonIsAUnion(t *testing.T) {
	mp := orb.MultiPolygon{
		{box(orb.Bound{Min: orb.Point{0, 0}, Max: orb.Point{10, 10}})},
		{box(orb.Bound{Min: orb.Point{5, 5}, Max: orb.Point{15, 15}})},
	}
	b, _ := json.Marshal(geojson.NewGeometry(mp))
	a := mustParse(t, b)
	tl := maptile.At(orb.Point{7.5, 7.5}, 16)
	if !a.Intersects(16, tl.X, tl.Y) {
		t.Fatal("the overlap of two polygons is outside")
	}
}

// TestParseRefuses: every file that is not a usable area is refused,
// saying why.
func TestParseRefuses(t *testing.T) {
	many := make([]string, MaxVertices+2)
	for i := range many {
		many[i] = fmt.Sprintf("[%f,%f]", float64(i%1000)/100, float64(i/1000)/100)
	}
	many[len(many)-1] = many[0]
	for _, tc := range []struct{ name, doc, want string }{
		{"not JSON", `{"type":`, "not JSON"},
		{"a point", `{"type":"Point","coordinates":[0,0]}`, "want a Polygon"},
		{"a line feature", `{"type":"Feature","geometry":{"type":"LineString","coordinates":[[0,0],[1,1]]},"properties":{}}`, "not a Polygon"},
		{"unclosed", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1]]]}`, "not closed"},
		{"too few points", `{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}`, "not closed"},
		{"degenerate", `{"type":"Polygon","coordinates":[[[0,0],[1,1],[2,2],[0,0]]]}`, "degenerate"},
		{"out of range", `{"type":"Polygon","coordinates":[[[0,0],[181,0],[1,1],[0,0]]]}`, "outside"},
		{"too many vertices", `{"type":"Polygon","coordinates":[[` + strings.Join(many, ",") + `]]}`, "more than"},
		{"empty collection", `{"type":"FeatureCollection","features":[]}`, "no polygon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("north", []byte(tc.doc))
			if !errors.Is(err, ErrBadArea) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "area north") {
				t.Fatalf("got %v, want ErrBadArea naming area north and saying %q", err, tc.want)
			}
		})
	}
	if _, err := Load("gone", "/nonexistent/area.geojson"); !errors.Is(err, ErrBadArea) || !strings.Contains(err.Error(), "area gone") {
		t.Fatalf("unreadable file: %v", err)
	}
}

// BenchmarkIndex100k builds the index of a 100,000-vertex outline (a
// country at full detail) and judges z18 tiles along its boundary; it
// reports the index's memory and build time.
func BenchmarkIndex100k(b *testing.B) {
	var ring orb.Ring
	const n = MaxVertices - 1
	for i := range n {
		a := float64(i) / n * 2 * math.Pi
		r := 5 * (1 + 0.1*math.Sin(a*97) + 0.05*math.Sin(a*1013) + 0.01*math.Sin(a*9973))
		ring = append(ring, orb.Point{10 + r*math.Cos(a), 50 + r*0.7*math.Sin(a)})
	}
	ring = append(ring, ring[0])
	doc, _ := json.Marshal(geojson.NewGeometry(orb.Polygon{ring}))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	a, err := Parse("country", doc)
	if err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	tiles := make([]maptile.Tile, 1024)
	for i := range tiles {
		tiles[i] = maptile.At(ring[i*(n/len(tiles))], 18)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		tl := tiles[i%len(tiles)]
		a.Intersects(18, tl.X, tl.Y)
		i++
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap_MiB")
	b.ReportMetric(float64(a.IndexBytes())/(1<<20), "index_MiB")
	b.ReportMetric(float64(a.nodes), "nodes")
	b.ReportMetric(float64(built.Milliseconds()), "build_ms")
	runtime.KeepAlive(a)
}
