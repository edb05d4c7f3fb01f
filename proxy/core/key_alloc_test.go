package core

import (
	"testing"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
)

// TestKeyAllocations: a tile's cache key costs one allocation, and so
// does a layer-filtered variant's (the hit path makes them every time).
func TestKeyAllocations(t *testing.T) {
	c, _ := newCore(t, true)
	src := c.tilesets["a"].src
	ac, _, _ := archiveCore(t, archivetest.Build(archivetest.Pyramid(2, "v1"), archivetest.Options{TileType: pmtiles.Png}), false)
	asrc := ac.tilesets["m"].src
	if _, err := asrc.Key(t.Context(), "2/1/1.png"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"prefix key", func() { src.Key(t.Context(), "3/4/2.png") }},
		{"prefix filtered key", func() { src.KeySuffixed(t.Context(), "3/4/2.png", layersSep, "roads") }},
		{"archive key", func() { asrc.Key(t.Context(), "2/1/1.png") }},
		{"archive filtered key", func() { asrc.KeySuffixed(t.Context(), "2/1/1.png", layersSep, "roads") }},
	} {
		if n := testing.AllocsPerRun(100, tc.fn); n != 1 {
			t.Errorf("%s: %v allocations, want 1", tc.name, n)
		}
	}
}
