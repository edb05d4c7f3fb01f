package worldtiles_test

import (
	"testing"

	"github.com/paulmach/orb/encoding/mvt"
	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/archive"
	"github.com/tileproxy/tileproxy/internal/worldtiles"
)

// TestArchive: the embedded archive is a valid vector archive whose
// zoom-0 tile holds the world's countries, by name.
func TestArchive(t *testing.T) {
	arc := worldtiles.Archive
	h, err := archive.Header(arc, int64(len(arc)))
	if err != nil {
		t.Fatal(err)
	}
	if h.TileType != pmtiles.Mvt || h.TileCompression != pmtiles.Gzip || h.MaxZoom != 5 {
		t.Fatalf("header: %+v", h)
	}
	root, err := archive.Directory(arc[h.RootOffset:h.RootOffset+h.RootLength], h)
	if err != nil {
		t.Fatal(err)
	}
	e, leaf, ok := archive.Find(root, pmtiles.ZxyToID(0, 0, 0))
	if !ok || leaf {
		t.Fatalf("tile 0/0/0: found %v, leaf %v", ok, leaf)
	}
	off := h.TileDataOffset + e.Offset
	layers, err := mvt.UnmarshalGzipped(arc[off : off+uint64(e.Length)])
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range layers[0].Features {
		if n, ok := f.Properties["name"].(string); ok {
			names[n] = true
		}
	}
	if layers[0].Name != "countries" || len(names) < 150 || !names["Brazil"] || !names["Japan"] || !names["Russia"] {
		t.Fatalf("layer %q with %d named countries", layers[0].Name, len(names))
	}
}
