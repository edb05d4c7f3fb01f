package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// archiveCore is a core with one archive tileset "m" (and a cache unless
// noCache) over an in-memory origin, on a fake clock.
func archiveCore(t *testing.T, arc []byte, noCache bool) (*Core, *origintest.Memory, *testenv.Clock) {
	t.Helper()
	c, mem, clk, _ := archiveCoreLogs(t, arc, noCache)
	return c, mem, clk
}

// archiveCoreLogs is archiveCore with the core's log.
func archiveCoreLogs(t *testing.T, arc []byte, noCache bool) (*Core, *origintest.Memory, *testenv.Clock, *testenv.SyncBuffer) {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Tilesets = []config.Tileset{{Name: "m", Bucket: "maps", Archive: "world.pmtiles", Missing: config.MissingEmpty}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	mem := origintest.NewMemory()
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: arc})
	clk := testenv.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	var c *cache.Cache
	if !noCache {
		var err error
		if c, err = cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{Now: clk.Now}); err != nil {
			t.Fatal(err)
		}
	}
	logs := &testenv.SyncBuffer{}
	core, err := New(&cfg, Deps{Fetcher: mem, Cache: c, Now: clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return core, mem, clk, logs
}

func getTile(t *testing.T, c *Core, path string) (Result, string, error) {
	t.Helper()
	res, err := c.Get(t.Context(), Request{Tileset: "m", Path: path})
	if err != nil {
		return res, "", err
	}
	b := body(t, &res)
	return res, b, nil
}

// TestArchiveTiles: every shape of archive serves every tile at its
// z/x/y URL with the archive's type and compression, from the cache on
// the second request; a wrong extension is 404, an absent tile 204
// (missing: empty), with and without a cache.
func TestArchiveTiles(t *testing.T) {
	tiles := archivetest.Pyramid(6, "v1")
	for _, tc := range []struct {
		name     string
		o        archivetest.Options
		ext      string
		ct, enc  string
		wrongExt string
	}{
		{"raster clustered", archivetest.Options{TileType: pmtiles.Png, MaxZoom: 6}, "png", "image/png", "", "jpg"},
		{"raster leaves gzip dirs", archivetest.Options{TileType: pmtiles.Jpeg, Gzip: true, Leaves: true, MaxZoom: 6}, "jpg", "image/jpeg", "", "png"},
		{"vector unclustered", archivetest.Options{TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Unclustered: true, MaxZoom: 6}, "pbf", "application/vnd.mapbox-vector-tile", "gzip", "png"},
		{"vector leaves", archivetest.Options{TileType: pmtiles.Mvt, Leaves: true, Gzip: true, MaxZoom: 6}, "mvt", "application/vnd.mapbox-vector-tile", "", "webp"},
	} {
		for _, noCache := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, no cache %v", tc.name, noCache), func(t *testing.T) {
				c, _, _ := archiveCore(t, archivetest.Build(tiles, tc.o), noCache)
				for _, k := range []pmtiles.Zxy{{Z: 0, X: 0, Y: 0}, {Z: 3, X: 5, Y: 2}, {Z: 6, X: 63, Y: 0}, {Z: 6, X: 17, Y: 40}} {
					for i := range 2 {
						res, got, err := getTile(t, c, fmt.Sprintf("%d/%d/%d.%s", k.Z, k.X, k.Y, tc.ext))
						if err != nil {
							t.Fatalf("%v #%d: %v", k, i, err)
						}
						if want := string(tiles[k]); got != want || res.Header.ContentType != tc.ct || res.Header.ContentEncoding != tc.enc || res.Header.ETag == "" {
							t.Fatalf("%v #%d: %q %+v; want %q", k, i, got, res.Header, want)
						}
						if !noCache && i == 1 && res.Cache != "HIT" {
							t.Errorf("%v second time: %s, want HIT", k, res.Cache)
						}
					}
				}
				if _, _, err := getTile(t, c, "0/0/0."+tc.wrongExt); !errors.Is(err, ErrNotFound) {
					t.Errorf("wrong extension: %v, want ErrNotFound", err)
				}
				for _, p := range []string{"7/0/0." + tc.ext, "2/4/0." + tc.ext, "a/b/c." + tc.ext, "1/01/0." + tc.ext, "0/0/0", "0/0." + tc.ext} {
					res, _, err := getTile(t, c, p)
					switch {
					case strings.HasPrefix(p, "7/") && (err != nil || res.Status != StatusNoContent):
						t.Errorf("%s, absent from the archive: %d %v, want 204", p, res.Status, err)
					case !strings.HasPrefix(p, "7/") && !errors.Is(err, ErrNotFound):
						t.Errorf("%s: %v, want ErrNotFound", p, err)
					}
				}
			})
		}
	}
}

// TestArchiveReads: the head is one read; with its directories warm a
// cold tile costs exactly one ranged GET, carrying If-Match; concurrent
// misses for one tile make one request.
func TestArchiveReads(t *testing.T) {
	arc := archivetest.Build(archivetest.Pyramid(6, "v1"), archivetest.Options{TileType: pmtiles.Png, Leaves: true, Gzip: true})
	c, mem, _ := archiveCore(t, arc, false)
	if _, _, err := getTile(t, c, "6/0/0.png"); err != nil { // head, leaf, tile
		t.Fatal(err)
	}
	reqs := mem.Requests()
	if len(reqs) != 3 || reqs[0].IfMatch != "" || reqs[1].IfMatch == "" || reqs[2].IfMatch == "" {
		t.Fatalf("first tile: %d requests %+v; want head, leaf and tile, the last two with If-Match", len(reqs), reqs)
	}
	before := len(mem.Requests())
	if _, _, err := getTile(t, c, "6/1/0.png"); err != nil {
		t.Fatal(err)
	}
	if n := len(mem.Requests()) - before; n != 1 {
		t.Fatalf("cold tile with warm directories: %d requests, want 1", n)
	}
	before = len(mem.Requests())
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			res, err := c.Get(context.Background(), Request{Tileset: "m", Path: "6/2/0.png"})
			if err != nil {
				t.Error(err)
			}
			res.Release()
		})
	}
	wg.Wait()
	if n := len(mem.Requests()) - before; n != 1 {
		t.Fatalf("20 concurrent misses for one tile: %d requests, want 1", n)
	}
}

// TestArchiveReplaced: a replaced archive is noticed by If-Match (412) on
// the next read, or by the head's revalidation after the TTL; its cached
// tiles and directories are dropped and no answer mixes versions.
func TestArchiveReplaced(t *testing.T) {
	o := archivetest.Options{TileType: pmtiles.Png, Leaves: true}
	c, mem, clk := archiveCore(t, archivetest.Build(archivetest.Pyramid(6, "v1"), o), false)
	if _, got, _ := getTile(t, c, "6/5/5.png"); got != "v1 6/5/5" {
		t.Fatalf("v1: %q", got)
	}
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: archivetest.Build(archivetest.Pyramid(6, "v2"), o)})
	// A tile not cached yet: its read carries v1's ETag, gets 412, and
	// is served from v2 after one more look.
	if _, got, err := getTile(t, c, "6/7/7.png"); err != nil || got != "v2 6/7/7" {
		t.Fatalf("after the replacement: %q %v, want v2", got, err)
	}
	// v1's cached tile went with v1.
	if _, got, _ := getTile(t, c, "6/5/5.png"); got != "v2 6/5/5" {
		t.Fatalf("a tile cached from v1: %q, want v2", got)
	}
	// Replaced again; this time the TTL's revalidation of the head sees it.
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: archivetest.Build(archivetest.Pyramid(6, "v3"), o)})
	if _, got, _ := getTile(t, c, "6/5/5.png"); got != "v2 6/5/5" {
		t.Fatalf("within the TTL: %q, want the cached v2", got)
	}
	clk.Add(config.Default().Cache.TTL.Duration() + time.Second)
	if _, got, _ := getTile(t, c, "6/5/5.png"); got != "v3 6/5/5" {
		t.Fatalf("after the TTL: %q, want v3", got)
	}
}

// TestArchiveHostile: broken archives answer 502 (origin.ErrUnavailable)
// with one log line, never a panic; a flood of requests costs one read of
// the archive per negative TTL, not one per request.
func TestArchiveHostile(t *testing.T) {
	good := archivetest.Build(archivetest.Pyramid(2, "v1"), archivetest.Options{TileType: pmtiles.Png})
	for _, tc := range []struct {
		name string
		arc  []byte
	}{
		{"empty object", []byte{}},
		{"truncated header", good[:60]},
		{"not an archive", []byte(strings.Repeat("<html>", 100))},
		{"tile type unknown", func() []byte { b := append([]byte(nil), good...); b[99] = 0; return b }()},
		{"mlt tiles", func() []byte { b := append([]byte(nil), good...); b[99] = byte(pmtiles.Mlt); return b }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, mem, clk, logs := archiveCoreLogs(t, tc.arc, false)
			for i := range 20 {
				if _, _, err := getTile(t, c, fmt.Sprintf("1/%d/0.png", i%2)); !errors.Is(err, origin.ErrUnavailable) {
					t.Fatalf("request %d: got %v, want a 502 (origin.ErrUnavailable)", i, err)
				}
			}
			if n, lines := len(mem.Requests()), strings.Count(logs.String(), "PMTiles archive unreadable"); n != 1 || lines != 1 {
				t.Fatalf("20 requests: %d reads of the archive and %d log lines, want 1 and 1\n%s", n, lines, logs.String())
			}
			clk.Add(config.Default().Cache.NegativeTTL.Duration() + time.Second)
			getTile(t, c, "0/0/0.png")
			if n := len(mem.Requests()); n != 2 {
				t.Fatalf("after the negative TTL: %d reads in all, want 2 (read again)", n)
			}
		})
	}
}

// TestArchiveTileJSON: built from the header and metadata.
func TestArchiveTileJSON(t *testing.T) {
	meta := map[string]any{"attribution": "© Test", "vector_layers": []any{map[string]any{"id": "countries", "fields": map[string]any{}}}}
	arc := archivetest.Build(archivetest.Pyramid(2, "v1"), archivetest.Options{TileType: pmtiles.Mvt, Gzip: true, Metadata: meta, MaxZoom: 2})
	c, _, _ := archiveCore(t, arc, false)
	doc, _, err := c.TileJSON(t.Context(), "m")
	if err != nil {
		t.Fatal(err)
	}
	var tj struct {
		Tiles        []string `json:"tiles"`
		Attribution  string   `json:"attribution"`
		VectorLayers []any    `json:"vector_layers"`
		MaxZoom      int      `json:"maxzoom"`
		Bounds       []float64
		Center       []float64
	}
	if err := json.Unmarshal(doc, &tj); err != nil {
		t.Fatal(err)
	}
	if len(tj.Tiles) != 1 || !strings.HasSuffix(tj.Tiles[0], "/tiles/m/{z}/{x}/{y}.mvt") || tj.Attribution != "© Test" ||
		len(tj.VectorLayers) != 1 || tj.MaxZoom != 2 || len(tj.Bounds) != 4 || len(tj.Center) != 3 {
		t.Fatalf("TileJSON: %s", doc)
	}
}

// TestArchiveMissing: an archive that is not in the bucket makes its
// tiles 404, read once per negative TTL, and is served once it appears.
func TestArchiveMissing(t *testing.T) {
	c, mem, clk := archiveCore(t, nil, false)
	mem.Delete("maps", "world.pmtiles")
	for range 10 {
		if _, _, err := getTile(t, c, "0/0/0.png"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing archive: %v, want ErrNotFound", err)
		}
	}
	if n := len(mem.Requests()); n != 1 {
		t.Fatalf("10 requests for a missing archive made %d reads, want 1", n)
	}
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: archivetest.Build(archivetest.Pyramid(1, "v1"), archivetest.Options{TileType: pmtiles.Png})})
	clk.Add(config.Default().Cache.NegativeTTL.Duration() + time.Second)
	if _, got, err := getTile(t, c, "1/1/0.png"); err != nil || got != "v1 1/1/0" {
		t.Fatalf("after it appeared: %q %v", got, err)
	}
}

// hostileLeafArchive is an archive whose root holds one leaf pointer of
// leafLen bytes at the start of a leaf section that holds garbage.
func hostileLeafArchive(leafLen uint32) []byte {
	root := pmtiles.SerializeEntries([]pmtiles.EntryV3{{TileID: 0, Offset: 0, Length: leafLen, RunLength: 0}}, pmtiles.NoCompression)
	leaves := []byte(strings.Repeat("not a directory ", 64))
	h := pmtiles.HeaderV3{SpecVersion: 3, RootOffset: pmtiles.HeaderV3LenBytes, RootLength: uint64(len(root)),
		Clustered: true, InternalCompression: pmtiles.NoCompression, TileCompression: pmtiles.NoCompression, TileType: pmtiles.Png,
		MaxZoom: 4, MinLonE7: -180e7, MinLatE7: -85e7, MaxLonE7: 180e7, MaxLatE7: 85e7}
	h.MetadataOffset = h.RootOffset + h.RootLength
	h.LeafDirectoryOffset = h.MetadataOffset
	h.LeafDirectoryLength = uint64(len(leaves))
	h.TileDataOffset = h.LeafDirectoryOffset + h.LeafDirectoryLength
	out := append(pmtiles.SerializeHeader(h), root...)
	return append(out, leaves...)
}

// TestArchiveHostileLeaf: a root entry pointing at a leaf over
// archive.MaxDirectoryBytes is refused from its length, before any read
// of it; a leaf that does not decode is read once; either is remembered
// for the negative TTL (one log line, no more reads), then tried again.
func TestArchiveHostileLeaf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		len   uint32
		reads int // of the leaf, per negative TTL
	}{
		{"leaf of 64 MiB", 64 << 20, 0},
		{"leaf that does not decode", 1000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, mem, clk, logs := archiveCoreLogs(t, hostileLeafArchive(tc.len), false)
			leafReads := func() int {
				n := 0
				for _, r := range mem.Requests() {
					if !strings.HasPrefix(r.Range, "bytes=0-") { // not the head
						n++
					}
				}
				return n
			}
			for i := range 20 {
				if _, _, err := getTile(t, c, fmt.Sprintf("2/%d/1.png", i%4)); !errors.Is(err, origin.ErrUnavailable) {
					t.Fatalf("request %d: %v, want a 502 (origin.ErrUnavailable)", i, err)
				}
			}
			if n, lines := leafReads(), strings.Count(logs.String(), "PMTiles archive unreadable"); n != tc.reads || lines != 1 {
				t.Fatalf("20 requests: %d reads of the leaf and %d log lines, want %d and 1\n%s", n, lines, tc.reads, logs.String())
			}
			clk.Add(config.Default().Cache.NegativeTTL.Duration() + time.Second)
			getTile(t, c, "2/0/1.png")
			if n := leafReads(); n != 2*tc.reads {
				t.Fatalf("after the negative TTL: %d reads of the leaf in all, want %d", n, 2*tc.reads)
			}
			if lines := strings.Count(logs.String(), "PMTiles archive unreadable"); lines != 2 {
				t.Fatalf("after the negative TTL: %d log lines, want 2", lines)
			}
		})
	}
}

// TestArchiveLeavesBeyondMaxObjectBytes: directories are the archive's
// index, not tiles: with max_object_bytes below a leaf's size every tile
// under the leaf is served, the leaf read once.
func TestArchiveLeavesBeyondMaxObjectBytes(t *testing.T) {
	arc := archivetest.Build(archivetest.Pyramid(6, "v1"), archivetest.Options{TileType: pmtiles.Png, Leaves: true})
	cfg := config.Default()
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Tilesets = []config.Tileset{{Name: "m", Bucket: "maps", Archive: "world.pmtiles"}}
	cfg.Cache.MaxObjectBytes = 16 // below every leaf of this archive
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	mem := origintest.NewMemory()
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: arc})
	cc, err := cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(&cfg, Deps{Fetcher: mem, Cache: cc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for y := range 64 {
		path := fmt.Sprintf("6/5/%d.png", y)
		if _, got, err := getTile(t, c, path); err != nil || got != "v1 "+strings.TrimSuffix(path, ".png") {
			t.Fatalf("%s: %q %v", path, got, err)
		}
	}
	leafReads := map[string]int{}
	for _, r := range mem.Requests() {
		leafReads[r.Range]++
	}
	for rng, n := range leafReads {
		if n > 1 && !strings.HasPrefix(rng, "bytes=0-") {
			// Tiles are streamed (over max_object_bytes), each its own
			// range; a range asked twice is a directory read again.
			t.Errorf("%s read %d times", rng, n)
		}
	}
}
