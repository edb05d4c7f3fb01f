package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// TestArchivesOnMinIO serves PMTiles archives the test builds (raster
// with leaf directories, gzip'd vector unclustered) from MinIO through the
// whole proxy: tiles at z/x/y URLs with the archive's type and encoding,
// ETag/304, X-Cache, TileJSON from the archive, and a replaced archive
// noticed by MinIO's own 412 on If-Match.
func TestArchivesOnMinIO(t *testing.T) {
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	raster := archivetest.Options{TileType: pmtiles.Png, Leaves: true, Gzip: true, MaxZoom: 6}
	vector := archivetest.Options{TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Gzip: true, Unclustered: true, MaxZoom: 3,
		Metadata: map[string]any{"attribution": "test", "vector_layers": []any{map[string]any{"id": "countries"}}}}
	env.Put(t, bucket, map[string]testenv.Object{
		"maps/raster.pmtiles": {Body: archivetest.Build(archivetest.Pyramid(6, "r1"), raster)},
		"maps/vector.pmtiles": {Body: archivetest.Build(archivetest.Pyramid(3, "v1"), vector)},
	})
	cc := config.Default().Cache
	st := newStack(t, env.Endpoint, env.AccessKey, env.SecretKey, []config.Tileset{
		{Name: "raster", Bucket: bucket, Archive: "maps/raster.pmtiles"},
		{Name: "vector", Bucket: bucket, Archive: "maps/vector.pmtiles", Missing: config.MissingEmpty},
	}, stackOpts{cache: &cc})
	tok := hmacToken(t, 3600e9, "raster", "vector")
	get := func(path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", st.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		// Asked for explicitly, so the transport does not gunzip the
		// (not really gzip'd) test tiles for us.
		req.Header.Set("Accept-Encoding", "gzip")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for i, want := range []string{"MISS", "HIT"} {
		resp, body := get("/tiles/raster/6/33/20.png")
		if resp.StatusCode != 200 || body != "r1 6/33/20" || resp.Header.Get("Content-Type") != "image/png" || resp.Header.Get("X-Cache") != want {
			t.Fatalf("raster #%d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	resp, body := get("/tiles/vector/2/1/3.pbf")
	if resp.StatusCode != 200 || body != "v1 2/1/3" || resp.Header.Get("Content-Encoding") != "gzip" ||
		resp.Header.Get("Content-Type") != "application/vnd.mapbox-vector-tile" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("vector: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if r, _ := get("/tiles/vector/2/1/3.pbf", "If-None-Match", resp.Header.Get("Etag")); r.StatusCode != 304 {
		t.Errorf("If-None-Match with the tile's ETag: %d, want 304", r.StatusCode)
	}
	if r, _ := get("/tiles/vector/2/1/3.png"); r.StatusCode != 404 {
		t.Errorf("wrong extension: %d, want 404", r.StatusCode)
	}
	if r, _ := get("/tiles/vector/5/1/3.pbf"); r.StatusCode != 204 {
		t.Errorf("tile absent from the archive, missing: empty: %d, want 204", r.StatusCode)
	}
	if r, body := get("/tiles/vector.json"); r.StatusCode != 200 || !strings.Contains(body, `"vector_layers"`) || !strings.Contains(body, "/tiles/vector/{z}/{x}/{y}.mvt") {
		t.Errorf("TileJSON: %d %s", r.StatusCode, body)
	}

	// Replace the raster archive: the next read of an uncached tile
	// carries the old ETag, MinIO answers 412, and the new version serves.
	env.Put(t, bucket, map[string]testenv.Object{"maps/raster.pmtiles": {Body: archivetest.Build(archivetest.Pyramid(6, "r2"), raster)}})
	if resp, body := get("/tiles/raster/6/1/1.png"); resp.StatusCode != 200 || body != "r2 6/1/1" {
		t.Fatalf("after replacing the archive: %d %q, want r2", resp.StatusCode, body)
	}
	if resp, body := get("/tiles/raster/6/33/20.png"); body != "r2 6/33/20" {
		t.Fatalf("a tile cached from the old archive: %d %q, want r2", resp.StatusCode, body)
	}
}
