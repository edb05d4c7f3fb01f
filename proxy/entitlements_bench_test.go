package proxy

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/paulmach/orb"
	"github.com/paulmach/orb/geojson"
	"github.com/paulmach/orb/maptile"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// jagged is a closed ring of n vertices around centre, its radius
// varying by ±10%: a country outline's worth of detail.
func jagged(centre orb.Point, radius float64, n int) orb.Ring {
	r := make(orb.Ring, 0, n+1)
	for i := range n {
		a := float64(i) / float64(n) * 2 * math.Pi
		rr := radius * (1 + 0.1*math.Sin(a*97) + 0.05*math.Sin(a*1013))
		r = append(r, orb.Point{centre[0] + rr*math.Cos(a), centre[1] + rr*0.7*math.Sin(a)})
	}
	return append(r, r[0])
}

// BenchmarkEntitlements measures cache hits through the whole handler
// under each kind of scope beside the same hit unscoped, round by round
// in one run (the order turned every round), and reports each ratio of
// requests per second, paired by round: the geometric mean, and the
// lowest and highest round. It runs its rounds once, whatever b.N.
func BenchmarkEntitlements(b *testing.B) {
	poly := orb.Polygon{jagged(orb.Point{10, 50}, 5, 10_000)}
	doc, _ := geojson.NewGeometry(poly).MarshalJSON()
	a10k, err := area.Parse("poly", doc)
	if err != nil {
		b.Fatal(err)
	}
	withCache, fixtureAreas = true, area.Set{"poly": a10k}
	defer func() { withCache, fixtureAreas = false, nil }()
	f := newFixture(b, func(c *config.Config) {
		c.Areas = map[string]string{"poly": "poly.geojson"}
		c.Tilesets = append(c.Tilesets, config.Tileset{Name: "v", Bucket: "tiles", Prefix: "v/", Format: "pbf", MaxZoom: 14,
			Bounds: []float64{-180, -85, 180, 85}, Missing: config.MissingNotFound, CacheControl: config.DefaultCacheControl})
	})
	f.p.log = discardLogger()
	f.p.access = accesslog.New(accesslog.JSON, io.Discard)
	inside := maptile.At(orb.Point{10, 50}, 12)
	// A z16 tile on the outline: judged exactly against its leaf's edges.
	edge := maptile.At(poly[0][0], 16)
	for _, tl := range []maptile.Tile{inside, edge} {
		f.mem.Put("tiles", fmt.Sprintf("a/%d/%d/%d.png", tl.Z, tl.X, tl.Y), origintest.Object{Body: make([]byte, 4<<10), ContentType: "image/png"})
	}
	if !a10k.Intersects(uint8(edge.Z), edge.X, edge.Y) {
		b.Fatal("the edge tile is outside the polygon")
	}
	f.mem.Put("tiles", "v/0/0/0.pbf", origintest.Object{Body: vectorTile(b, "roads", "water", "pipes"), ContentType: "application/x-protobuf", ContentEncoding: "gzip"})
	path := func(tl maptile.Tile) string { return fmt.Sprintf("/tiles/a/%d/%d/%d.png", tl.Z, tl.X, tl.Y) }
	// Every token is padded to one length, so that the variants differ by
	// the scope alone: a longer token costs more SHA-256 in the
	// verified-token cache on every request, whatever it says.
	const tokenLen = 400
	padded := func(sub string, grants any) string {
		for pad := 0; ; pad++ {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "tilesets": grants, "pad": strings.Repeat("p", pad),
				"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
			if err != nil {
				b.Fatal(err)
			}
			if len(tok) >= tokenLen {
				return tok
			}
		}
	}
	unscoped := padded("un", map[string]any{"a": map[string]any{}, "v": map[string]any{}})
	type variant struct{ name, tok, path string }
	vs := []variant{
		{"unscoped", unscoped, path(inside)},
		{"zoom+bbox", padded("zb", map[string]any{"a": map[string]any{"zoom": "0-16", "bbox": []any{0, 40, 20, 60}}}), path(inside)},
		{"area-10k-inside", padded("ai", map[string]any{"a": map[string]any{"areas": []any{"poly"}}}), path(inside)},
		{"area-10k-edge", padded("ae", map[string]any{"a": map[string]any{"areas": []any{"poly"}}}), path(edge)},
		{"unscoped-edge", unscoped, path(edge)},
		{"vector", unscoped, "/tiles/v/0/0/0.pbf"},
		{"vector-filtered", padded("vf", map[string]any{"v": map[string]any{"layers": []any{"roads"}}}), "/tiles/v/0/0/0.pbf"},
	}
	reqs := make([]*http.Request, len(vs))
	w := &nopWriter{h: http.Header{}}
	for i, v := range vs {
		reqs[i] = httptest.NewRequest("GET", v.path, nil)
		reqs[i].Header.Set("Authorization", "Bearer "+v.tok)
		rec := httptest.NewRecorder()
		f.p.ServeHTTP(rec, reqs[i]) // fills the cache, and checks the variant works
		if rec.Code != 200 {
			b.Fatalf("%s: %d", v.name, rec.Code)
		}
	}
	ns := interleaved(len(vs), func(i int) {
		clear(w.h)
		f.p.ServeHTTP(w, reqs[i])
	})
	var out strings.Builder
	for _, p := range [][3]any{
		{1, 0, "zoom+bbox/unscoped"}, {2, 0, "area-10k-inside/unscoped"}, {3, 4, "area-10k-edge/unscoped-edge"}, {6, 5, "filtered/unfiltered"},
	} {
		m, lo, hi := ratio(ns, p[0].(int), p[1].(int))
		fmt.Fprintf(&out, "req/s %s %.3f (%.3f-%.3f)\n", p[2], m, lo, hi)
		b.ReportMetric(m, strings.ReplaceAll(p[2].(string), "/", "_per_"))
	}
	out.WriteString("ns/hit, best round:")
	for i, v := range vs {
		fmt.Fprintf(&out, " %s %.0f", v.name, slices.Min(ns[i]))
	}
	b.Logf("\n%s", out.String())
}

// Interleaving: variants take turns in chunks of 1,000 requests, the
// order turned every chunk and round, so that what the neighbours do to
// the machine lands on all of them alike.
const rounds, chunks, chunk = 6, 60, 1_000

// interleaved runs serve(i) for each of n variants, round by round, and
// returns the mean ns per request of each variant in each round.
func interleaved(n int, serve func(i int)) [][]float64 { return interleavedN(n, chunk, serve) }

// interleavedN is interleaved with chunks of size requests (fewer for
// requests that cost tens of microseconds).
func interleavedN(n, size int, serve func(i int)) [][]float64 {
	ns := make([][]float64, n)
	for r := range rounds {
		total := make([]time.Duration, n)
		for c := range chunks {
			for k := range n {
				i := (k + c + r) % n
				start := time.Now()
				for range size {
					serve(i)
				}
				total[i] += time.Since(start)
			}
		}
		for i := range n {
			ns[i] = append(ns[i], float64(total[i].Nanoseconds())/float64(chunks*size))
		}
	}
	return ns
}

// ratio is the requests per second of variant num over variant den,
// paired by round: the geometric mean, the lowest and the highest round.
func ratio(ns [][]float64, num, den int) (mean, lo, hi float64) {
	lo, hi, sum := math.Inf(1), 0.0, 0.0
	for r := range rounds {
		q := ns[den][r] / ns[num][r]
		lo, hi, sum = min(lo, q), max(hi, q), sum+math.Log(q)
	}
	return math.Exp(sum / rounds), lo, hi
}
