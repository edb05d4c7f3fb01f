package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

func tokenFor(t testing.TB, sub string, tilesets ...string) string {
	t.Helper()
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: tilesets, TTL: time.Hour, Subject: sub})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// expectMetric compares one metric family with the exposition lines want.
func (f *fixture) expectMetric(t *testing.T, name string, want ...string) {
	t.Helper()
	exp := "# HELP " + name + " " + help(t, f, name) + "\n# TYPE " + name + " counter\n" + strings.Join(want, "\n") + "\n"
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(exp), name); err != nil {
		t.Error(err)
	}
}

func help(t *testing.T, f *fixture, name string) string {
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetHelp()
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

// TestStoredContentTypes: only tile and metadata types pass through from
// S3; anything a browser could run as a document on tileproxy's origin
// goes out as application/octet-stream, and every tile says nosniff.
func TestStoredContentTypes(t *testing.T) { bothModes(t, testStoredContentTypes) }

func testStoredContentTypes(t *testing.T) {
	cases := []struct {
		key, stored, want string
	}{
		{"a/html.png", "text/html", "application/octet-stream"},
		{"a/html2.png", "text/html; charset=utf-8", "application/octet-stream"},
		{"a/svg.png", "image/svg+xml", "application/octet-stream"},
		{"a/js.json", "application/javascript", "application/octet-stream"},
		{"a/xhtml.png", "application/xhtml+xml", "application/octet-stream"},
		{"a/xml.png", "text/xml", "application/octet-stream"},
		{"a/pdf.png", "application/pdf", "application/octet-stream"},
		{"a/png.png", "image/png", "image/png"},
		{"a/upper.png", "IMAGE/PNG", "image/png"},
		{"a/param.png", "image/png; x=\"<script>\"", "image/png"},
		{"a/avif.avif", "image/avif", "image/avif"},
		{"a/webp.webp", "image/webp", "image/webp"},
		{"a/mvt.pbf", "application/vnd.mapbox-vector-tile", "application/vnd.mapbox-vector-tile"},
		{"a/proto.pbf", "application/x-protobuf", "application/x-protobuf"},
		{"a/meta.json", "application/json; charset=utf-8", "application/json"},
		{"a/generic.png", "binary/octet-stream", "image/png"},
		{"a/generic.html", "application/octet-stream", "application/octet-stream"},
		{"a/none.jpg", "", "image/jpeg"},
	}
	f := newFixture(t, nil)
	for _, c := range cases {
		f.mem.Put("tiles", c.key, origintest.Object{Body: []byte("<html><script>alert(1)</script>"), ContentType: c.stored})
	}
	a := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")}
	for _, c := range cases {
		for _, hdr := range []map[string]string{a, {"Authorization": a["Authorization"], "Range": "bytes=0-3"}} {
			w := f.do("GET", "/tiles/"+c.key, hdr)
			if w.Code != 200 && w.Code != 206 {
				t.Fatalf("%s: %d", c.key, w.Code)
			}
			if got := w.Header().Get("Content-Type"); got != c.want {
				t.Errorf("%s stored as %q (Range %q): Content-Type %q, want %q", c.key, c.stored, hdr["Range"], got, c.want)
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: no nosniff", c.key)
			}
		}
	}
	if w := f.do("GET", "/tiles/a.json", a); w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("TileJSON without nosniff")
	}
}

// TestSlowReadersDoNotStarveOthers is the regression test for streams
// that kept their s3.max_in_flight slot until the client had read the
// whole body: one slot, taken by a client that reads nothing, left
// everyone else with 503.
func TestSlowReadersDoNotStarveOthers(t *testing.T) {
	// Room for every Get of the test: nobody waits on entered here.
	bf := &blockingFetcher{entered: make(chan struct{}, 1000), release: make(chan struct{}), body: func() io.Reader { return endless{} }}
	close(bf.release)
	f := newFixture(t, func(c *config.Config) { c.S3.MaxInFlight = 1; c.Limits.StreamsPerPrincipal = 2 })
	f.setFetcher(byKey{big: bf, small: f.mem})
	srv := httptest.NewServer(f.p)
	defer srv.Close()
	get := func(tok, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	alice, bob := tokenFor(t, "alice", "a"), tokenFor(t, "bob", "a")

	// Alice opens two streams and reads nothing of either.
	var slow []*http.Response
	for i := range 2 {
		resp := get(alice, "/tiles/a/big"+string(rune('0'+i))+".bin")
		if resp.StatusCode != 200 {
			t.Fatalf("alice's stream %d: %d", i, resp.StatusCode)
		}
		slow = append(slow, resp)
	}
	// Before srv.Close, which waits for every handler to end.
	defer func() {
		for _, r := range slow {
			r.Body.Close()
		}
	}()
	// Bob is not kept out by alice's downloads: the origin slot covers
	// the fetch from S3, not the client's download.
	resp := get(bob, "/tiles/a/big9.bin")
	if resp.StatusCode != 200 {
		t.Fatalf("bob while alice holds two slow streams: %d, want 200", resp.StatusCode)
	}
	resp.Body.Close()
	// A third stream of alice's is over her limit: 429 with Retry-After.
	resp = get(alice, "/tiles/a/big2.bin")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" || string(body) != "too many requests\n" {
		t.Fatalf("alice's third stream: %d %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	f.expectMetric(t, "tileproxy_limited_total", `tileproxy_limited_total{reason="streams"} 1`)
	// Tiles are not downloads: at her stream limit, alice still gets them.
	for range 3 {
		resp := get(alice, "/tiles/a/0/0/0.png")
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("alice's tile while at her stream limit: %d", resp.StatusCode)
		}
	}
	// Once one of hers ends, she may open another.
	slow[0].Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp = get(alice, "/tiles/a/big3.bin")
		resp.Body.Close()
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice after closing a stream: %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRatePerPrincipal: a token bucket per principal, on an injected
// clock; one principal's flood does not touch another's.
func TestRatePerPrincipal(t *testing.T) { bothModes(t, testRatePerPrincipal) }

func testRatePerPrincipal(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Limits.Rate = 2; c.Limits.Burst = 3; c.Limits.MaxPrincipals = 2 })
	var mu sync.Mutex
	clk := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.setClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return clk })
	advance := func(d time.Duration) { mu.Lock(); clk = clk.Add(d); mu.Unlock() }
	alice := map[string]string{"Authorization": "Bearer " + tokenFor(t, "alice", "a")}
	bob := map[string]string{"Authorization": "Bearer " + tokenFor(t, "bob", "a")}
	for i := range 3 {
		if w := f.do("GET", "/tiles/a/0/0/0.png", alice); w.Code != 200 {
			t.Fatalf("alice %d within the burst: %d", i, w.Code)
		}
	}
	w := f.do("GET", "/tiles/a/0/0/0.png", alice)
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("alice over the burst: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	if w := f.do("GET", "/tiles/a.json", alice); w.Code != 429 {
		t.Errorf("TileJSON is rate limited too: %d", w.Code)
	}
	if w := f.do("GET", "/tiles/a/0/0/0.png", bob); w.Code != 200 {
		t.Fatalf("bob while alice is limited: %d", w.Code)
	}
	advance(500 * time.Millisecond) // one token at 2/s
	if w := f.do("GET", "/tiles/a/0/0/0.png", alice); w.Code != 200 {
		t.Fatalf("alice after a token came back: %d", w.Code)
	}
	f.expectMetric(t, "tileproxy_limited_total", `tileproxy_limited_total{reason="rate"} 2`)
	// Refusals before the token check are not charged to the bucket.
	if w := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + tokenFor(t, "carol", "b")}); w.Code != 403 {
		t.Errorf("carol without a grant: %d", w.Code)
	}
}

// TestTokensInPathsAreRedacted: a token pasted into the path does not
// reach the access log or the error log.
func TestTokensInPathsAreRedacted(t *testing.T) {
	f := newFixture(t, nil)
	tok := token(t, time.Hour, "a")
	for _, target := range []string{
		"/tiles/a/0/0/0.png;access_token=" + tok,
		"/tiles/a/" + tok + "/0.png",
		"/tiles/nope/" + tok,
	} {
		f.do("GET", target, map[string]string{"Authorization": "Bearer " + tok})
	}
	logs := f.log.String()
	if strings.Contains(logs, tok) || strings.Contains(logs, strings.Split(tok, ".")[1]) {
		t.Fatalf("a token reached the log:\n%s", logs)
	}
	if n := strings.Count(logs, "[jwt]"); n < 3 {
		t.Errorf("%d redactions in the log, want 3:\n%s", n, logs)
	}
}

// byKey sends keys under a/big to one fetcher and the rest to another.
type byKey struct{ big, small origin.Fetcher }

func (b byKey) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	if strings.HasPrefix(req.Key, "a/big") {
		return b.big.Get(ctx, req)
	}
	return b.small.Get(ctx, req)
}
