package proxy

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/paulmach/orb"
	orbmvt "github.com/paulmach/orb/encoding/mvt"
	"github.com/paulmach/orb/maptile"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/mvttest"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// scopedToken is a self-issued token whose grants claim is grants.
func scopedToken(t testing.TB, sub string, grants any) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "tilesets": grants,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// vectorTile is a gzip'd tile of the named layers.
func vectorTile(_ testing.TB, names ...string) []byte { return mvttest.Tile(true, names...) }

func layersOf(t testing.TB, body []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("not gzip'd: %v", err)
	}
	raw, _ := io.ReadAll(zr)
	ls, err := orbmvt.Unmarshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.Name)
	}
	return out
}

// scopeFixture has tileset a (PNG), e (PNG, outside: empty) and v (gzip'd
// vector tiles), an area "north" (a square over 0-10°E, 50-60°N) and a
// cache.
func scopeFixture(t *testing.T) *fixture {
	t.Helper()
	north, err := area.Parse("north", []byte(`{"type":"Polygon","coordinates":[[[0,50],[10,50],[10,60],[0,60],[0,50]]]}`))
	if err != nil {
		t.Fatal(err)
	}
	withCache, fixtureAreas = true, area.Set{"north": north}
	t.Cleanup(func() { withCache, fixtureAreas = false, nil })
	f := newFixture(t, func(c *config.Config) {
		c.Areas = map[string]string{"north": "north.geojson"}
		c.Tilesets = append(c.Tilesets,
			config.Tileset{Name: "e", Bucket: "tiles", Prefix: "e/", Format: "png", Outside: config.OutsideEmpty, MaxZoom: 22, Bounds: []float64{-180, -85, 180, 85}, Missing: config.MissingNotFound, CacheControl: config.DefaultCacheControl},
			config.Tileset{Name: "v", Bucket: "tiles", Prefix: "v/", Format: "pbf", MaxZoom: 14, Bounds: []float64{-180, -85, 180, 85}, Missing: config.MissingNotFound, CacheControl: config.DefaultCacheControl})
	})
	for z := 0; z <= 22; z++ {
		for _, p := range []orb.Point{{5, 55}, {100, -30}, {175, 0}, {-175, 0}, {0.5, 0.5}} {
			tl := maptile.At(p, maptile.Zoom(z))
			for _, ts := range []string{"a", "e"} {
				f.mem.Put("tiles", fmt.Sprintf("%s/%d/%d/%d.png", ts, z, tl.X, tl.Y), origintest.Object{Body: []byte("png"), ContentType: "image/png"})
			}
		}
	}
	f.mem.Put("tiles", "v/0/0/0.pbf", origintest.Object{Body: vectorTile(t, "roads", "water", "pipes"), ContentType: "application/x-protobuf", ContentEncoding: "gzip"})
	return f
}

func tilePath(ts string, p orb.Point, z int, ext string) string {
	tl := maptile.At(p, maptile.Zoom(z))
	return fmt.Sprintf("/tiles/%s/%d/%d/%d.%s", ts, z, tl.X, tl.Y, ext)
}

// TestScopedGrants: a tile outside every scoped grant is refused before
// any cache or origin work, with 403 error="outside_grant" (or 204 where
// the tileset says outside: empty); inside, it is served.
func TestScopedGrants(t *testing.T) {
	f := scopeFixture(t)
	north, south, east, west, zero := orb.Point{5, 55}, orb.Point{100, -30}, orb.Point{175, 0}, orb.Point{-175, 0}, orb.Point{0.5, 0.5}
	zoom := map[string]any{"a": map[string]any{"zoom": "0-5"}}
	box := map[string]any{"a": map[string]any{"bbox": []any{0, 40, 20, 60}}}
	antimeridian := map[string]any{"a": map[string]any{"bbox": []any{170, -10, -170, 10}}}
	inNorth := map[string]any{"a": map[string]any{"areas": []any{"north"}, "zoom": "3-22"}, "e": map[string]any{"areas": []any{"north"}}}
	union := map[string]any{"*": map[string]any{"zoom": "0-1"}, "a": map[string]any{"zoom": "4-5"}}
	for _, tc := range []struct {
		name   string
		grants any
		path   string
		want   int
	}{
		{"zoom inside", zoom, tilePath("a", north, 5, "png"), 200},
		{"zoom beyond", zoom, tilePath("a", north, 6, "png"), 403},
		{"bbox inside", box, tilePath("a", north, 9, "png"), 200},
		{"bbox outside", box, tilePath("a", south, 9, "png"), 403},
		{"across the antimeridian, east", antimeridian, tilePath("a", east, 8, "png"), 200},
		{"across the antimeridian, west", antimeridian, tilePath("a", west, 8, "png"), 200},
		{"across the antimeridian, far", antimeridian, tilePath("a", zero, 8, "png"), 403},
		{"area inside", inNorth, tilePath("a", north, 12, "png"), 200},
		{"area inside at z22", inNorth, tilePath("a", north, 22, "png"), 200},
		{"area outside", inNorth, tilePath("a", south, 12, "png"), 403},
		{"area and zoom: too shallow", inNorth, tilePath("a", north, 2, "png"), 403},
		{"outside: empty", inNorth, tilePath("e", south, 12, "png"), 204},
		{"union: the wildcard's zooms", union, tilePath("a", north, 1, "png"), 200},
		{"union: the tileset's zooms", union, tilePath("a", north, 4, "png"), 200},
		{"union: neither", union, tilePath("a", north, 3, "png"), 403},
		{"union: another tileset, wildcard only", union, tilePath("b", north, 3, "png"), 403},
		{"not z/x/y", zoom, "/tiles/a/metadata.json", 403},
		{"not granted at all", zoom, tilePath("b", north, 1, "png"), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := scopedToken(t, "s-"+tc.name, tc.grants)
			before := len(f.mem.Requests())
			w := f.do("GET", tc.path, map[string]string{"Authorization": "Bearer " + tok})
			if w.Code != tc.want {
				t.Fatalf("%s: %d %q, want %d", tc.path, w.Code, w.Body.String(), tc.want)
			}
			denied := tc.want == 403 || tc.want == 204
			if denied && len(f.mem.Requests()) != before {
				t.Errorf("a denied tile cost %d origin requests", len(f.mem.Requests())-before)
			}
			if tc.want == 403 && !strings.Contains(tc.name, "not granted") &&
				w.Header().Get("WWW-Authenticate") != `Bearer error="outside_grant"` {
				t.Errorf("WWW-Authenticate %q, want error=\"outside_grant\"", w.Header().Get("WWW-Authenticate"))
			}
		})
	}
	if !strings.Contains(f.log.String(), "reason=outside_grant") {
		t.Error("the access line does not name the reason")
	}
	if n := counted(t, f, "tileproxy_auth_failures_total", "reason", "outside_grant"); n == 0 {
		t.Error("outside_grant not counted")
	}
}

// TestMalformedScopes: a token whose scope is malformed is refused with
// 401 invalid_token, never read as a wider grant.
func TestMalformedScopes(t *testing.T) {
	f := scopeFixture(t)
	for _, grants := range []any{
		map[string]any{"a": map[string]any{"zoom": "9-3"}},
		map[string]any{"a": map[string]any{"zoom": 7}},
		map[string]any{"a": map[string]any{"bbox": []any{1, 2, 3}}},
		map[string]any{"a": map[string]any{"bbox": []any{0, 0, 200, 10}}},
		map[string]any{"a": map[string]any{"areas": []any{"nowhere"}}},
		map[string]any{"a": map[string]any{"layers": "roads"}},
		map[string]any{"a": map[string]any{"zom": "0-3"}},
	} {
		w := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + scopedToken(t, "m", grants)})
		if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("%v: %d %q, want 401 invalid_token", grants, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
}

// TestLayerScopes: two principals with different layer scopes each get a
// tile of only their layers, under an ETag of their own, from one origin
// GET; Range, HEAD and 304 are judged on the filtered tile; a tile with
// none of the granted layers answers as outside.
func TestLayerScopes(t *testing.T) {
	f := scopeFixture(t)
	roads := "Bearer " + scopedToken(t, "roads", map[string]any{"v": map[string]any{"layers": []any{"roads"}}})
	wet := "Bearer " + scopedToken(t, "wet", map[string]any{"v": map[string]any{"layers": []any{"water", "pipes"}}})
	all := "Bearer " + token(t, time.Hour, "v")
	none := "Bearer " + scopedToken(t, "none", map[string]any{"v": map[string]any{"layers": []any{"nosuch"}}})
	get := func(auth string, hdr ...string) (int, []byte, map[string]string) {
		h := map[string]string{"Authorization": auth}
		for i := 0; i+1 < len(hdr); i += 2 {
			h[hdr[i]] = hdr[i+1]
		}
		w := f.do("GET", "/tiles/v/0/0/0.pbf", h)
		out := map[string]string{}
		for _, k := range []string{"Etag", "Content-Length", "Content-Encoding", "Content-Range", "X-Cache"} {
			out[k] = w.Header().Get(k)
		}
		return w.Code, w.Body.Bytes(), out
	}
	code, body, hr := get(roads)
	if code != 200 || !slices.Equal(layersOf(t, body), []string{"roads"}) || hr["Content-Encoding"] != "gzip" {
		t.Fatalf("roads: %d %v %v", code, hr, body)
	}
	code, wetBody, hw := get(wet)
	if code != 200 || !slices.Equal(layersOf(t, wetBody), []string{"water", "pipes"}) {
		t.Fatalf("water and pipes: %d", code)
	}
	code, _, ha := get(all)
	if code != 200 || ha["Etag"] == hr["Etag"] || ha["Etag"] == hw["Etag"] || hr["Etag"] == hw["Etag"] {
		t.Fatalf("ETags are not per layer set: all %s, roads %s, wet %s", ha["Etag"], hr["Etag"], hw["Etag"])
	}
	gets := 0
	for _, r := range f.mem.Requests() {
		if r.Key == "v/0/0/0.pbf" {
			gets++
		}
	}
	if gets != 1 {
		t.Fatalf("three layer sets cost %d origin GETs, want 1", gets)
	}
	if _, again, h := get(roads); !bytes.Equal(again, body) || h["X-Cache"] != "HIT" {
		t.Errorf("the filtered tile again: X-Cache %s, same bytes %v", h["X-Cache"], bytes.Equal(again, body))
	}
	if code, _, _ := get(roads, "If-None-Match", hr["Etag"]); code != 304 {
		t.Errorf("If-None-Match of the filtered ETag: %d, want 304", code)
	}
	if code, b, _ := get(roads, "If-None-Match", ha["Etag"]); code != 200 || !slices.Equal(layersOf(t, b), []string{"roads"}) {
		t.Errorf("If-None-Match of the unfiltered ETag: %d, want 200 with the filtered tile", code)
	}
	if code, b, h := get(roads, "Range", "bytes=0-9"); code != 206 || !bytes.Equal(b, body[:10]) || h["Content-Range"] != fmt.Sprintf("bytes 0-9/%d", len(body)) {
		t.Errorf("Range: %d %v, want the filtered tile's first bytes", code, h)
	}
	if w := f.do("HEAD", "/tiles/v/0/0/0.pbf", map[string]string{"Authorization": roads}); w.Header().Get("Content-Length") != fmt.Sprint(len(body)) {
		t.Errorf("HEAD Content-Length %s, want the filtered %d", w.Header().Get("Content-Length"), len(body))
	}
	if code, _, _ := get(none); code != 403 {
		t.Errorf("no granted layer in the tile: %d, want 403", code)
	}
}

// TestScopedTileJSON: a scoped principal's TileJSON says what its grants
// reach, privately, under an ETag of its own.
func TestScopedTileJSON(t *testing.T) {
	f := scopeFixture(t)
	tj := func(auth string) (map[string]any, string, string) {
		w := f.do("GET", "/tiles/a.json", map[string]string{"Authorization": auth})
		if w.Code != 200 {
			t.Fatalf("TileJSON: %d", w.Code)
		}
		var m map[string]any
		json.Unmarshal(w.Body.Bytes(), &m)
		return m, w.Header().Get("Etag"), w.Header().Get("Cache-Control")
	}
	full, fullTag, _ := tj("Bearer " + token(t, time.Hour, "a"))
	scoped, tag, cc := tj("Bearer " + scopedToken(t, "tj", map[string]any{"a": map[string]any{"zoom": "2-4", "areas": []any{"north"}, "bbox": []any{-20, 40, 5, 70}}}))
	if fmt.Sprint(scoped["minzoom"], scoped["maxzoom"]) != "2 4" {
		t.Errorf("zooms %v-%v, want 2-4", scoped["minzoom"], scoped["maxzoom"])
	}
	if got := fmt.Sprint(scoped["bounds"]); got != "[0 50 5 60]" {
		t.Errorf("bounds %s, want the area clipped by the bbox, [0 50 5 60]", got)
	}
	if tag == fullTag || tag == "" || !strings.Contains(cc, "private") {
		t.Errorf("ETag %s (unscoped %s), Cache-Control %q", tag, fullTag, cc)
	}
	if fmt.Sprint(full["maxzoom"]) != "5" {
		t.Errorf("the unscoped document changed: %v", full)
	}
}

// counted is the value of the counter name's series whose label is value.
func counted(t *testing.T, f *fixture, name, label, value string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
