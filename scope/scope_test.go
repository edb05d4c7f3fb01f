package scope

import (
	"errors"
	"slices"
	"testing"

	"github.com/paulmach/orb"
	"github.com/paulmach/orb/maptile"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
)

func compile(t *testing.T, s config.Scope, areas area.Set) Grant {
	t.Helper()
	g, err := Compile(s, areas)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestJudgeLayers: across grants the layers sent are the union of the
// layers of the grants that allow the tile; a grant without layers sends
// every layer.
func TestJudgeLayers(t *testing.T) {
	low := compile(t, config.Scope{Zoom: "0-5", Layers: []string{"roads", "water"}}, nil)
	high := compile(t, config.Scope{Zoom: "4-9", Layers: []string{"pipes", "roads"}}, nil)
	open := compile(t, config.Scope{Zoom: "9"}, nil)
	for _, tc := range []struct {
		z      uint8
		ok     bool
		layers []string
	}{
		{2, true, []string{"roads", "water"}},
		{4, true, []string{"pipes", "roads", "water"}},
		{7, true, []string{"pipes", "roads"}},
		{9, true, nil},
		{10, false, nil},
	} {
		ok, layers := Judge([]Grant{low, high, open}, tc.z, 0, 0)
		if ok != tc.ok || !slices.Equal(layers, tc.layers) {
			t.Errorf("z%d: %v %v, want %v %v", tc.z, ok, layers, tc.ok, tc.layers)
		}
	}
	if ok, layers := Judge(nil, 30, 0, 0); !ok || layers != nil {
		t.Error("nil grants are not the whole tileset")
	}
}

// TestCompileRefuses: a malformed scope is an error, never a wider grant.
func TestCompileRefuses(t *testing.T) {
	for _, s := range []config.Scope{
		{Zoom: "5-2"}, {Zoom: "x"}, {BBox: []float64{1, 2, 3}}, {BBox: []float64{0, 10, 5, 0}},
		{BBox: []float64{-181, 0, 0, 1}}, {Areas: []string{"nowhere"}}, {Layers: []string{""}},
	} {
		if _, err := Compile(s, nil); !errors.Is(err, config.ErrBadScope) {
			t.Errorf("%+v: %v, want ErrBadScope", s, err)
		}
	}
}

// TestNarrow: TileJSON's view of the grants.
func TestNarrow(t *testing.T) {
	sq, err := area.Parse("sq", []byte(`{"type":"Polygon","coordinates":[[[0,50],[10,50],[10,60],[0,60],[0,50]]]}`))
	if err != nil {
		t.Fatal(err)
	}
	areas := area.Set{"sq": sq}
	a := compile(t, config.Scope{Zoom: "2-6", Areas: []string{"sq"}, BBox: []float64{5, 40, 20, 70}, Layers: []string{"roads"}}, areas)
	b := compile(t, config.Scope{Zoom: "4-8", BBox: []float64{-10, -10, -5, -5}, Layers: []string{"water"}}, areas)
	n := Narrow([]Grant{a, b})
	if n.MinZoom != 2 || n.MaxZoom != 8 || !slices.Equal(n.Bounds, []float64{-10, -10, 10, 60}) || !slices.Equal(n.Layers, []string{"roads", "water"}) || n.AllLayers {
		t.Fatalf("%+v", n)
	}
	// The area clipped by the bbox: [5, 50, 10, 60].
	n = Narrow([]Grant{a})
	if !slices.Equal(n.Bounds, []float64{5, 50, 10, 60}) {
		t.Fatalf("bounds %v", n.Bounds)
	}
	tl := maptile.At(orb.Point{2, 55}, 10) // in the area, outside the bbox
	if ok, _ := Judge([]Grant{a}, 10, tl.X, tl.Y); ok {
		t.Fatal("a tile outside the bbox but inside the area was allowed")
	}
}
