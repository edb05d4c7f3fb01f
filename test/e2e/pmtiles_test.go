package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/internal/tilegen"
)

// TestVectorArchiveInMapLibre: MapLibre GL in Chromium draws gzip'd
// vector tiles from a PMTiles archive on MinIO through tileproxy, with
// the session cookie, its source described by the TileJSON tileproxy
// builds from the archive; a second load of the page is served from the
// browser cache.
func TestVectorArchiveInMapLibre(t *testing.T) { eachTransport(t, testVectorArchive) }

func testVectorArchive(t *testing.T, tr transport) {
	e := setupWith(t, tr, func(cfg *config.Config, e *env) {
		tiles := map[pmtiles.Zxy][]byte{}
		for z := 0; z <= 3; z++ {
			for x := 0; x < 1<<z; x++ {
				for y := 0; y < 1<<z; y++ {
					b, err := tilegen.MVT(z, x, y)
					if err != nil {
						t.Fatal(err)
					}
					tiles[pmtiles.Zxy{Z: uint8(z), X: uint32(x), Y: uint32(y)}] = b
				}
			}
		}
		arc := archivetest.Build(tiles, archivetest.Options{TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Gzip: true, MaxZoom: 3,
			Metadata: map[string]any{"vector_layers": []any{map[string]any{"id": "tiles", "fields": map[string]any{"zxy": "String"}}}}})
		bucket := cfg.Tilesets[0].Bucket
		testenv.MinIO(t).Put(t, bucket, map[string]testenv.Object{"archives/vector.pmtiles": {Body: arc}})
		cfg.Tilesets = append(cfg.Tilesets, config.Tileset{Name: "vmap", Bucket: bucket, Archive: "archives/vector.pmtiles"})
	})
	e.token = mintFor(t, "demo", "vmap")
	url := fmt.Sprintf("%s/pmtiles.html?proxy=%s&tileset=vmap#token=%s", e.allowedPages, e.proxyURL, e.token)
	ctx, _ := browser(t, e.spki)
	e.rec.setPhase("pmtiles/load1")
	if err := chromedp.Do(ctx, chromedp.Navigate(url), waitStatus("ready")); err != nil {
		t.Fatalf("first load: %v (page says %q)", err, status(ctx))
	}
	// Background, outlines and fills of three tile colours.
	checkColours(t, ctx, e, "pmtiles-vector", 4)
	load1 := e.rec.in("pmtiles/load1")
	if len(load1) == 0 {
		t.Fatal("the map requested no vector tiles")
	}
	for _, h := range load1 {
		if h.status != 200 {
			t.Errorf("%s answered %d", h.path, h.status)
		}
	}
	checkProto(t, tr, load1)
	e.rec.setPhase("pmtiles/load2")
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(url), waitStatus("ready")); err != nil {
		t.Fatalf("second load: %v", err)
	}
	if n := len(e.rec.in("pmtiles/load2")); n != 0 {
		t.Errorf("second load: %d tile requests reached the proxy, want 0 (browser cache)", n)
	}
}

// mintFor is a development token for tilesets.
func mintFor(t *testing.T, tilesets ...string) string {
	t.Helper()
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: tilesets, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
