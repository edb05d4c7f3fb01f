package archive_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/archive"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
)

// TestMatchesGoPmtiles holds the copy of go-pmtiles' format code in
// pmtiles.go to the module itself: the same header, directory entries,
// lookups, tile ids and TileJSON from archives of every shape.
func TestMatchesGoPmtiles(t *testing.T) {
	meta := map[string]any{"attribution": "a", "vector_layers": []any{map[string]any{"id": "l"}}, "name": "n"}
	for _, o := range []archivetest.Options{
		{TileType: pmtiles.Png, MaxZoom: 6},
		{TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Gzip: true, Leaves: true, MaxZoom: 6, Metadata: meta},
		{TileType: pmtiles.Webp, Unclustered: true, Leaves: true, MinZoom: 2, MaxZoom: 6},
	} {
		arc := archivetest.Build(archivetest.Pyramid(6, "v"), o)
		ours, err := archive.DeserializeHeader(arc)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := pmtiles.DeserializeHeader(arc)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", ours) != fmt.Sprintf("%+v", theirs) {
			t.Fatalf("header:\n%+v\n%+v", ours, theirs)
		}
		dirs := [][2]uint64{{theirs.RootOffset, theirs.RootLength}}
		for len(dirs) > 0 {
			d := dirs[0]
			dirs = dirs[1:]
			raw, err := archive.Metadata(arc[d[0]:d[0]+d[1]], ours) // undoes the internal compression
			if err != nil {
				t.Fatal(err)
			}
			a := archive.DeserializeEntries(bytes.NewBuffer(raw), archive.NoCompression)
			b := pmtiles.DeserializeEntries(bytes.NewBuffer(arc[d[0]:d[0]+d[1]]), theirs.InternalCompression)
			if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
				t.Fatalf("entries differ at %v", d)
			}
			for id := uint64(0); id < 6000; id += 7 {
				ea, oka := archive.FindTile(a, id)
				eb, okb := pmtiles.FindTile(b, id)
				if oka != okb || fmt.Sprintf("%+v", ea) != fmt.Sprintf("%+v", eb) {
					t.Fatalf("FindTile(%d): %v %+v, upstream %v %+v", id, oka, ea, okb, eb)
				}
			}
			for _, e := range b {
				if e.RunLength == 0 {
					dirs = append(dirs, [2]uint64{theirs.LeafDirectoryOffset + e.Offset, uint64(e.Length)})
				}
			}
		}
		m, _ := archive.Metadata(arc[theirs.MetadataOffset:theirs.MetadataOffset+theirs.MetadataLength], ours)
		ta, errA := archive.CreateTileJSON(ours, m, "https://t.example/tiles/x")
		tb, errB := pmtiles.CreateTileJSON(theirs, m, "https://t.example/tiles/x")
		if errA != nil || errB != nil || !bytes.Equal(ta, tb) {
			t.Fatalf("TileJSON:\n%s\n%s", ta, tb)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		z := uint8(rng.IntN(27))
		x, y := rng.Uint32N(1<<z), rng.Uint32N(1<<z)
		if a, b := archive.ZxyToID(z, x, y), pmtiles.ZxyToID(z, x, y); a != b {
			t.Fatalf("ZxyToID(%d, %d, %d) = %d, upstream %d", z, x, y, a, b)
		}
	}
}
