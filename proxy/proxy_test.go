package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

var secret = "0123456789abcdef0123456789abcdef"

type fixture struct {
	p   *Proxy
	mem *origintest.Memory
	reg *prometheus.Registry
	log *testenv.SyncBuffer
	// cache is the proxy's cache, nil unless withCache.
	cache *cache.Cache
	// fetcher is what the proxy fetches through: mem unless a test swaps
	// in another (setFetcher).
	fetcher *swapFetcher
	// now is the proxy's clock: time.Now unless a test sets it.
	now atomic.Pointer[func() time.Time]
}

// swapFetcher lets a test replace the origin after the proxy is built.
type swapFetcher struct {
	f atomic.Pointer[origin.Fetcher]
}

func (s *swapFetcher) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	return (*s.f.Load()).Get(ctx, req)
}

// setFetcher makes the proxy fetch through o from now on.
func (f *fixture) setFetcher(o origin.Fetcher) { f.fetcher.f.Store(&o) }

// setClock makes now the proxy's clock (rate limits, durations).
func (f *fixture) setClock(now func() time.Time) { f.now.Store(&now) }

// inFlight is tileproxy_origin_in_flight: s3.max_in_flight slots taken.
func (f *fixture) inFlight(t testing.TB) int {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tileproxy_origin_in_flight" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no tileproxy_origin_in_flight")
	return 0
}

// withCache selects whether newFixture builds the proxy with a cache.
var withCache = false

// fixtureAreas are the areas newFixture's verifier knows.
var fixtureAreas area.Set

// fixtureRevoked and fixtureExfil, when set, are newFixture's
// revocations and exfiltration limits.
var (
	fixtureRevoked func(iss, sub, jti string) bool
	fixtureExfil   *exfil.Limiter
	fixtureAudit   *audit.Writer
)

func newFixture(t testing.TB, mod func(*config.Config)) *fixture {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.HMACSecret = secret
	cfg.Viewer = true
	cfg.Tilesets = []config.Tileset{
		{Name: "a", Bucket: "tiles", Prefix: "a/", Format: "png", CacheControl: config.DefaultCacheControl, Missing: config.MissingNotFound, MaxZoom: 5, Bounds: []float64{-180, -85, 180, 85}},
		{Name: "b", Bucket: "tiles", Prefix: "b/", Format: "png", CacheControl: "private, max-age=60", Missing: config.MissingEmpty, MaxZoom: 5, Bounds: []float64{-180, -85, 180, 85}},
	}
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{Areas: fixtureAreas, Revoked: fixtureRevoked})
	if err != nil {
		t.Fatal(err)
	}
	mem := origintest.NewMemory()
	mem.Put("tiles", "a/0/0/0.png", origintest.Object{Body: []byte("PNG-a-000"), ContentType: "image/png"})
	mem.Put("tiles", "a/1/0/0.png", origintest.Object{Body: []byte("PNG-a-100")}) // no stored type
	mem.Put("tiles", "a/0/0/0.pbf", origintest.Object{Body: []byte("gzip-mvt"), ContentEncoding: "gzip"})
	mem.Put("tiles", "b/0/0/0.png", origintest.Object{Body: []byte("PNG-b-000"), ContentType: "image/png"})
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Build{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	var c *cache.Cache
	if withCache {
		if c, err = cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{PoisonFreed: true}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{mem: mem, reg: reg, log: logs, cache: c, fetcher: &swapFetcher{}}
	f.setFetcher(mem)
	f.setClock(time.Now)
	p, err := New(&cfg, Deps{Verifier: v, Fetcher: f.fetcher, Cache: c, Metrics: m, Exfil: fixtureExfil, Audit: fixtureAudit, Now: func() time.Time { return (*f.now.Load())() },
		Logger: slog.New(slog.NewTextHandler(logs, nil)), AccessLog: accesslog.New(accesslog.Text, logs)})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	return f
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func token(t testing.TB, ttl time.Duration, tilesets ...string) string {
	t.Helper()
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: tilesets, TTL: ttl, Subject: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// do sends a raw request line target, so paths reach the handler exactly
// as a client wrote them.
func (f *fixture) do(method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", nil)
	r.RequestURI = target
	u, err := r.URL.Parse(target)
	if err == nil {
		r.URL = u
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.p.ServeHTTP(w, r)
	return w
}

// bothModes runs a test without and with the cache: the HTTP contract is
// the same either way.
func bothModes(t *testing.T, test func(t *testing.T)) {
	for _, on := range []bool{false, true} {
		t.Run(map[bool]string{false: "stream", true: "cached"}[on], func(t *testing.T) {
			withCache = on
			defer func() { withCache = false }()
			test(t)
		})
	}
}

func TestStatusCodes(t *testing.T) { bothModes(t, testStatusCodes) }

func testStatusCodes(t *testing.T) {
	f := newFixture(t, nil)
	a := "Bearer " + token(t, time.Hour, "a")
	star := "Bearer " + token(t, time.Hour, "*")
	expired, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"a"}, TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		name, method, target, authz string
		want                        int
	}{
		{"ok", "GET", "/tiles/a/0/0/0.png", a, 200},
		{"head", "HEAD", "/tiles/a/0/0/0.png", a, 200},
		{"dotdot", "GET", "/tiles/a/../b/0/0/0.png", a, 400},
		{"dot", "GET", "/tiles/a/./0/0/0.png", a, 400},
		{"double slash", "GET", "/tiles/a//0/0/0.png", a, 400},
		{"leading double slash", "GET", "//tiles/a/0/0/0.png", a, 400},
		{"backslash", "GET", "/tiles/a/..\\b/0.png", a, 400},
		{"encoded dotdot", "GET", "/tiles/a/%2e%2e/b/0/0/0.png", a, 400},
		{"encoded dotdot upper", "GET", "/tiles/a/%2E%2E/b/0/0/0.png", a, 400},
		{"encoded slash", "GET", "/tiles/a/..%2fb/0.png", a, 400},
		{"encoded backslash", "GET", "/tiles/a/..%5cb/0.png", a, 400},
		{"double encoding", "GET", "/tiles/a/%252e%252e/0.png", a, 400},
		{"encoded NUL", "GET", "/tiles/a/0%00.png", a, 400},
		{"overlong utf8 dot", "GET", "/tiles/a/%c0%ae%c0%ae/0.png", a, 400},
		{"too long", "GET", "/tiles/a/" + strings.Repeat("x", 1100) + ".png", a, 400},
		{"no tile", "GET", "/tiles/a/", a, 400},
		{"no token", "GET", "/tiles/a/0/0/0.png", "", 401},
		{"garbage token", "GET", "/tiles/a/0/0/0.png", "Bearer nope", 401},
		{"expired", "GET", "/tiles/a/0/0/0.png", "Bearer " + expired, 401},
		{"not granted", "GET", "/tiles/b/0/0/0.png", a, 403},
		{"not granted unknown", "GET", "/tiles/zzz/0/0/0.png", a, 403},
		{"granted unknown", "GET", "/tiles/zzz/0/0/0.png", star, 404},
		{"missing object", "GET", "/tiles/a/9/9/9.png", a, 404},
		{"missing empty", "GET", "/tiles/b/9/9/9.png", star, 204},
		{"post", "POST", "/tiles/a/0/0/0.png", a, 405},
		{"delete", "DELETE", "/tiles/a/0/0/0.png", a, 405},
		{"healthz", "GET", "/healthz", "", 200},
		{"readyz before ready", "GET", "/readyz", "", 503},
		{"unknown route", "GET", "/nope", "", 404},
		{"tilejson", "GET", "/tiles/a.json", a, 200},
		{"tilejson not granted", "GET", "/tiles/b.json", a, 403},
		{"tilejson no token", "GET", "/tiles/a.json", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.authz != "" {
				hdr["Authorization"] = tc.authz
			}
			w := f.do(tc.method, tc.target, hdr)
			if w.Code != tc.want {
				t.Fatalf("got %d (%q), want %d", w.Code, w.Body.String(), tc.want)
			}
			if w.Code >= 400 {
				body := w.Body.String()
				if len(body) > 40 || strings.Count(body, "\n") != 1 {
					t.Errorf("error body not one short line: %q", body)
				}
				for _, leak := range []string{"tiles/", "bucket", "NoSuchKey", "goroutine", secret} {
					if strings.Contains(body, leak) {
						t.Errorf("error body leaks %q: %q", leak, body)
					}
				}
				if w.Header().Get("Cache-Control") != "no-store" {
					t.Errorf("error Cache-Control: got %q, want no-store", w.Header().Get("Cache-Control"))
				}
			}
		})
	}
}

func TestAuthHeaders(t *testing.T) {
	f := newFixture(t, nil)
	w := f.do("GET", "/tiles/a/0/0/0.png", nil)
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer realm="tileproxy"` {
		t.Errorf("no token: WWW-Authenticate %q", got)
	}
	w = f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer x.y.z"})
	if got := w.Header().Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
		t.Errorf("bad token: WWW-Authenticate %q", got)
	}
	w = f.do("PUT", "/tiles/a/0/0/0.png", nil)
	if got := w.Header().Get("Allow"); got != "GET, HEAD" {
		t.Errorf("405 Allow: %q", got)
	}
}

func TestCheckOrder(t *testing.T) {
	// The path is judged before the token, the token before the grant,
	// the grant before the tileset, and nothing reaches the origin first.
	f := newFixture(t, nil)
	if w := f.do("GET", "/tiles/zzz/../x.png", nil); w.Code != 400 {
		t.Errorf("bad path without token: got %d, want 400", w.Code)
	}
	if w := f.do("GET", "/tiles/zzz/0/0/0.png", map[string]string{"Authorization": "Bearer bad"}); w.Code != 401 {
		t.Errorf("bad token on unknown tileset: got %d, want 401", w.Code)
	}
	if n := f.mem.Calls.Load(); n != 0 {
		t.Errorf("origin called %d times for refused requests", n)
	}
}

func TestTileHeaders(t *testing.T) { bothModes(t, testTileHeaders) }

func testTileHeaders(t *testing.T) {
	f := newFixture(t, nil)
	a := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a", "b")}
	w := f.do("GET", "/tiles/a/0/0/0.png", a)
	want := map[string]string{
		"Content-Type":   "image/png",
		"Content-Length": "9",
		"Etag":           origintest.ETag([]byte("PNG-a-000")),
		"Last-Modified":  "Fri, 02 Jan 2026 03:04:05 GMT",
		"Cache-Control":  "private, max-age=3600",
		"Accept-Ranges":  "bytes",
		"X-Cache":        "MISS",
	}
	for k, v := range want {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	if w.Body.String() != "PNG-a-000" {
		t.Errorf("body: got %q", w.Body.String())
	}
	// Per-tileset Cache-Control.
	if got := f.do("GET", "/tiles/b/0/0/0.png", a).Header().Get("Cache-Control"); got != "private, max-age=60" {
		t.Errorf("tileset b Cache-Control: %q", got)
	}
	// Type by extension when S3 stored none; gzip passed through.
	if got := f.do("GET", "/tiles/a/1/0/0.png", a).Header().Get("Content-Type"); got != "image/png" {
		t.Errorf("content type by extension: %q", got)
	}
	w = f.do("GET", "/tiles/a/0/0/0.pbf", a)
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Type") != "application/vnd.mapbox-vector-tile" {
		t.Errorf("pbf headers: %v", w.Header())
	}
	// HEAD: same headers, no body.
	w = f.do("HEAD", "/tiles/a/0/0/0.png", a)
	if w.Body.Len() != 0 || w.Header().Get("Content-Length") != "9" || w.Header().Get("Etag") == "" {
		t.Errorf("HEAD: body %q headers %v", w.Body.String(), w.Header())
	}
	// Conditional: the client's ETag gets a 304.
	w = f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": a["Authorization"], "If-None-Match": want["Etag"]})
	if w.Code != 304 || w.Body.Len() != 0 {
		t.Errorf("If-None-Match: got %d", w.Code)
	}
	w = f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": a["Authorization"], "If-Modified-Since": want["Last-Modified"]})
	if w.Code != 304 {
		t.Errorf("If-Modified-Since: got %d", w.Code)
	}
	// Range.
	w = f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": a["Authorization"], "Range": "bytes=0-2"})
	if w.Code != 206 || w.Body.String() != "PNG" || w.Header().Get("Content-Range") != "bytes 0-2/9" {
		t.Errorf("Range: got %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	w = f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": a["Authorization"], "Range": "bytes=100-"})
	if w.Code != 416 {
		t.Errorf("Range outside: got %d, want 416", w.Code)
	}
}

func TestTokenSources(t *testing.T) {
	f := newFixture(t, nil)
	good := token(t, time.Hour, "a")
	for _, tc := range []struct {
		name   string
		build  func(r *http.Request)
		target string
		want   int
	}{
		{"header", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+good) }, "/tiles/a/0/0/0.png", 200},
		{"cookie", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: auth.SecureCookieName, Value: good}) }, "/tiles/a/0/0/0.png", 200},
		// With cookie.secure only the __Host- cookie counts: a plain one
		// may have been planted by a sibling subdomain.
		{"plain cookie when secure", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: auth.CookieName, Value: good}) }, "/tiles/a/0/0/0.png", 401},
		{"query", func(r *http.Request) {}, "/tiles/a/0/0/0.png?access_token=" + good, 200},
		{"bad header, good cookie", func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer bad")
			r.AddCookie(&http.Cookie{Name: auth.SecureCookieName, Value: good})
		}, "/tiles/a/0/0/0.png", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.target, nil)
			tc.build(r)
			w := httptest.NewRecorder()
			f.p.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("got %d, want %d", w.Code, tc.want)
			}
		})
	}
	// The token in the query never reaches the access log.
	if strings.Contains(f.log.String(), good) {
		t.Error("access log contains the token")
	}
}

func TestOriginErrors(t *testing.T) { bothModes(t, testOriginErrors) }

func testOriginErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{&origin.Error{Kind: origin.ErrDenied, Op: "GetObject", Code: "AccessDenied", Err: errors.New("Access Denied for bucket tiles key a/0/0/0.png")}, 502},
		{&origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject", Err: errors.New("dial tcp 127.0.0.1:9000: connection refused")}, 502},
		{&origin.Error{Kind: origin.ErrTimeout, Op: "GetObject"}, 504},
	} {
		f := newFixture(t, nil)
		f.mem.Err = tc.err
		w := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")})
		if w.Code != tc.want {
			t.Errorf("%v: got %d, want %d", tc.err, w.Code, tc.want)
		}
		if b := w.Body.String(); strings.Contains(b, "Access") || strings.Contains(b, "127.0.0.1") || strings.Contains(b, "a/0/0/0") {
			t.Errorf("body leaks origin detail: %q", b)
		}
	}
}

func TestSession(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.Auth.Cookie.Secure = true; c.Auth.Cookie.SameSite = "strict" })
	tok := token(t, time.Hour, "a")
	w := f.do("POST", "/auth/session", map[string]string{"Authorization": "Bearer " + tok})
	if w.Code != 204 {
		t.Fatalf("POST /auth/session: got %d", w.Code)
	}
	sc := w.Header().Get("Set-Cookie")
	if !strings.HasPrefix(sc, "__Host-tileproxy_token="+tok+";") || strings.Contains(sc, "Domain") {
		t.Errorf("Set-Cookie %q: want the __Host- cookie, with no Domain", sc)
	}
	for _, part := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Strict", "Max-Age=3"} {
		if !strings.Contains(sc, part) {
			t.Errorf("Set-Cookie %q lacks %q", sc, part)
		}
	}
	if w := f.do("POST", "/auth/session", map[string]string{"Authorization": "Bearer bad"}); w.Code != 401 || w.Header().Get("Set-Cookie") != "" {
		t.Errorf("bad token opened a session: %d", w.Code)
	}
	if w := f.do("POST", "/auth/session", map[string]string{"Cookie": "tileproxy_token=" + tok}); w.Code != 401 {
		t.Errorf("cookie renewed a session: %d", w.Code)
	}
	w = f.do("DELETE", "/auth/session", nil)
	if w.Code != 204 || !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") || !strings.HasPrefix(w.Header().Get("Set-Cookie"), "__Host-tileproxy_token=;") {
		t.Errorf("DELETE: %d %q", w.Code, w.Header().Get("Set-Cookie"))
	}
	if w := f.do("GET", "/auth/session", nil); w.Code != 405 || w.Header().Get("Allow") != "POST, DELETE" {
		t.Errorf("GET /auth/session: %d", w.Code)
	}

	// Local plain HTTP: the cookie cannot be Secure, so it cannot be
	// __Host- either, and keeps its plain name.
	plain := newFixture(t, func(c *config.Config) { c.Auth.Cookie.Secure = false })
	w = plain.do("POST", "/auth/session", map[string]string{"Authorization": "Bearer " + tok})
	if sc := w.Header().Get("Set-Cookie"); w.Code != 204 || !strings.HasPrefix(sc, "tileproxy_token="+tok+";") || strings.Contains(sc, "Secure") {
		t.Errorf("plain HTTP session: %d %q", w.Code, sc)
	}
	if w := plain.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Cookie": "tileproxy_token=" + tok}); w.Code != 200 {
		t.Errorf("plain cookie on plain HTTP: %d", w.Code)
	}
}

// TestSessionOrigin: a page may open a session only from tileproxy's own
// host or an origin listed exactly in cors.allowed_origins; "*" does not
// count (login CSRF: no other site plants its token as someone's session).
func TestSessionOrigin(t *testing.T) {
	f := newFixture(t, func(c *config.Config) {
		c.Auth.Cookie.Secure, c.Auth.Cookie.SameSite = true, "none"
		c.CORS.AllowedOrigins = []string{"https://maps.example.com", "*"}
	})
	tok := token(t, time.Hour, "a")
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"", 204}, // no Origin: not a page
		{"https://maps.example.com", 204},
		{"http://example.com", 204}, // the fixture's own host
		{"https://evil.example.net", 403},
		{"null", 403},
		{"https://maps.example.com.evil.net", 403},
	} {
		h := map[string]string{"Authorization": "Bearer " + tok}
		if tc.origin != "" {
			h["Origin"] = tc.origin
		}
		w := f.do("POST", "/auth/session", h)
		if w.Code != tc.want || (tc.want != 204) != (w.Header().Get("Set-Cookie") == "") {
			t.Errorf("Origin %q: %d (Set-Cookie %q), want %d", tc.origin, w.Code, w.Header().Get("Set-Cookie"), tc.want)
		}
	}
}

func TestTileJSON(t *testing.T) {
	f := newFixture(t, func(c *config.Config) { c.PublicURL = "https://maps.example.com/" })
	w := f.do("GET", "/tiles/a.json", map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")})
	body := w.Body.String()
	for _, want := range []string{`"tilejson":"3.0.0"`, `"tiles":["https://maps.example.com/tiles/a/{z}/{x}/{y}.png"]`, `"maxzoom":5`, `"bounds":[-180,-85,180,85]`} {
		if !strings.Contains(body, want) {
			t.Errorf("TileJSON lacks %s: %s", want, body)
		}
	}
}

func TestReadyAndViewer(t *testing.T) {
	f := newFixture(t, nil)
	f.p.SetReady(true)
	if w := f.do("GET", "/readyz", nil); w.Code != 200 {
		t.Errorf("readyz: %d", w.Code)
	}
	f.p.SetReady(false)
	if w := f.do("GET", "/readyz", nil); w.Code != 503 {
		t.Errorf("readyz draining: %d", w.Code)
	}
	w := f.do("GET", "/", nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `<option value="a"`) || !strings.Contains(w.Body.String(), "/viewer/leaflet.js") {
		t.Errorf("viewer: %d", w.Code)
	}
	if w := f.do("GET", "/viewer/leaflet.js", nil); w.Code != 200 || !strings.Contains(w.Body.String(), "Leaflet") || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
		t.Errorf("leaflet.js: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if w := f.do("GET", "/viewer/nope.js", nil); w.Code != 404 {
		t.Errorf("unknown asset: %d", w.Code)
	}
	off := newFixture(t, func(c *config.Config) { c.Viewer = false })
	if w := off.do("GET", "/", nil); w.Code != 404 {
		t.Errorf("viewer off: %d", w.Code)
	}
	if w := off.do("GET", "/viewer/leaflet.js", nil); w.Code != 404 {
		t.Errorf("viewer asset with viewer off: %d", w.Code)
	}
}

func TestMetricsCount(t *testing.T) {
	f := newFixture(t, nil)
	a := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")}
	f.do("GET", "/tiles/a/0/0/0.png", a)
	f.do("GET", "/tiles/a/0/0/0.png", a)
	f.do("GET", "/tiles/a/9/9/9.png", a)
	f.do("GET", "/tiles/b/0/0/0.png", a)
	f.do("GET", "/tiles/evil-scanner-name/0/0/0.png", nil)
	f.do("GET", "/tiles/a/../b/0/0/0.png", a)
	want := `
# HELP tileproxy_requests_total HTTP requests answered, by tileset and status code.
# TYPE tileproxy_requests_total counter
tileproxy_requests_total{code="200",tileset="a"} 2
tileproxy_requests_total{code="400",tileset="_unknown"} 1
tileproxy_requests_total{code="401",tileset="_unknown"} 1
tileproxy_requests_total{code="403",tileset="b"} 1
tileproxy_requests_total{code="404",tileset="a"} 1
# HELP tileproxy_auth_failures_total Refused requests by reason (no_token, expired, bad_signature, not_granted, ...).
# TYPE tileproxy_auth_failures_total counter
tileproxy_auth_failures_total{reason="no_token"} 1
tileproxy_auth_failures_total{reason="not_granted"} 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "tileproxy_requests_total", "tileproxy_auth_failures_total"); err != nil {
		t.Error(err)
	}
}

func TestCacheHitMatchesMiss(t *testing.T) {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(t, nil)
	a := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")}
	miss := f.do("GET", "/tiles/a/0/0/0.png", a)
	hit := f.do("GET", "/tiles/a/0/0/0.png", a)
	if miss.Header().Get("X-Cache") != "MISS" || hit.Header().Get("X-Cache") != "HIT" {
		t.Fatalf("X-Cache: %q then %q", miss.Header().Get("X-Cache"), hit.Header().Get("X-Cache"))
	}
	for k := range miss.Header() {
		if k != "X-Cache" && miss.Header().Get(k) != hit.Header().Get(k) {
			t.Errorf("%s: MISS %q, HIT %q", k, miss.Header().Get(k), hit.Header().Get(k))
		}
	}
	if len(hit.Header()) != len(miss.Header()) || hit.Body.String() != miss.Body.String() {
		t.Errorf("HIT differs: %v vs %v", hit.Header(), miss.Header())
	}
	etag := miss.Header().Get("Etag")
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
		body string
	}{
		{"304 from cache", map[string]string{"If-None-Match": etag}, 304, ""},
		{"304 weak list", map[string]string{"If-None-Match": `"x", W/` + etag}, 304, ""},
		{"IMS", map[string]string{"If-Modified-Since": miss.Header().Get("Last-Modified")}, 304, ""},
		{"range", map[string]string{"Range": "bytes=4-"}, 206, "a-000"},
		{"range outside", map[string]string{"Range": "bytes=50-60"}, 416, ""},
		{"stale If-Range ignores range", map[string]string{"Range": "bytes=0-2", "If-Range": `"old"`}, 200, "PNG-a-000"},
	} {
		h := map[string]string{"Authorization": a["Authorization"]}
		for k, v := range tc.hdr {
			h[k] = v
		}
		w := f.do("GET", "/tiles/a/0/0/0.png", h)
		if w.Code != tc.want || (tc.body != "" && w.Body.String() != tc.body) {
			t.Errorf("%s: got %d %q, want %d %q", tc.name, w.Code, w.Body.String(), tc.want, tc.body)
		}
	}
	if w := f.do("HEAD", "/tiles/a/0/0/0.png", a); w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Length") != "9" {
		t.Errorf("HEAD hit: %d %v", w.Code, w.Header())
	}
	if n := f.mem.Calls.Load(); n != 1 {
		t.Errorf("origin calls: got %d, want 1 (everything after the miss from cache)", n)
	}
	// Authorization is decided before the cache: the cached tile of a is
	// not served to a token for b, nor to no token.
	if w := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "b")}); w.Code != 403 {
		t.Errorf("cached tile to another grant: %d", w.Code)
	}
	if w := f.do("GET", "/tiles/a/0/0/0.png", nil); w.Code != 401 {
		t.Errorf("cached tile without token: %d", w.Code)
	}
	// Missing tiles are remembered.
	f.do("GET", "/tiles/a/9/9/9.png", a)
	f.do("GET", "/tiles/a/9/9/9.png", a)
	if n := f.mem.Calls.Load(); n != 2 {
		t.Errorf("origin calls after two misses of one hole: %d, want 2", n)
	}
}

func TestCORS(t *testing.T) {
	const page = "http://maps.example.com:3000"
	tok := "Bearer " + token(t, time.Hour, "a")
	for _, tc := range []struct {
		name           string
		allowed        []string
		method, origin string
		hdr            map[string]string
		code           int
		acao, acac     string
	}{
		{"off", nil, "GET", page, map[string]string{"Authorization": tok}, 200, "", ""},
		{"exact", []string{page}, "GET", page, map[string]string{"Authorization": tok}, 200, page, "true"},
		{"exact on a 401", []string{page}, "GET", page, nil, 401, page, "true"},
		{"other origin", []string{page}, "GET", "http://evil.example.com", map[string]string{"Authorization": tok}, 200, "", ""},
		{"star", []string{"*"}, "GET", "http://any.example.com", map[string]string{"Authorization": tok}, 200, "*", ""},
		{"star keeps exact credentials", []string{"*", page}, "GET", page, map[string]string{"Authorization": tok}, 200, page, "true"},
		{"preflight", []string{page}, "OPTIONS", page, map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}, 204, page, "true"},
		{"preflight refused", []string{page}, "OPTIONS", "http://evil.example.com", map[string]string{"Access-Control-Request-Method": "GET"}, 403, "", ""},
		{"plain OPTIONS", []string{page}, "OPTIONS", page, nil, 405, page, "true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *config.Config) { c.CORS.AllowedOrigins = tc.allowed })
			hdr := map[string]string{"Origin": tc.origin}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			w := f.do(tc.method, "/tiles/a/0/0/0.png", hdr)
			h := w.Header()
			if w.Code != tc.code || h.Get("Access-Control-Allow-Origin") != tc.acao || h.Get("Access-Control-Allow-Credentials") != tc.acac {
				t.Fatalf("got %d ACAO=%q ACAC=%q, want %d %q %q", w.Code, h.Get("Access-Control-Allow-Origin"), h.Get("Access-Control-Allow-Credentials"), tc.code, tc.acao, tc.acac)
			}
			if tc.allowed != nil && h.Get("Vary") != "Origin" {
				t.Errorf("Vary: %q", h.Get("Vary"))
			}
			if tc.allowed == nil && h.Get("Vary") != "" {
				t.Errorf("Vary without CORS: %q", h.Get("Vary"))
			}
			if tc.code == 204 && (!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST")) {
				t.Errorf("preflight headers: %v", h)
			}
			if tc.code == 200 && tc.acao != "" && !strings.Contains(h.Get("Access-Control-Expose-Headers"), "X-Cache") {
				t.Errorf("Expose-Headers: %q", h.Get("Access-Control-Expose-Headers"))
			}
			if tc.code == 204 && f.mem.Calls.Load() != 0 {
				t.Error("preflight reached the origin")
			}
		})
	}
}

func TestMultiRangeIgnored(t *testing.T) {
	bothModes(t, func(t *testing.T) {
		f := newFixture(t, nil)
		w := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{
			"Authorization": "Bearer " + token(t, time.Hour, "a"),
			"Range":         "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 500), ","),
		})
		if w.Code != 200 || w.Body.String() != "PNG-a-000" {
			t.Fatalf("multi-range: got %d with %d bytes, want the whole tile", w.Code, w.Body.Len())
		}
	})
}

// TestTileRouteMatchesMux holds the hand-written tile route to ServeMux's
// reading of the same pattern, for every path checkPath lets through.
func TestTileRouteMatchesMux(t *testing.T) {
	f := newFixture(t, nil)
	ref := http.NewServeMux()
	var gotName, gotPath string
	ref.HandleFunc(tilePattern, func(w http.ResponseWriter, r *http.Request) {
		gotName, gotPath = r.PathValue("tileset"), r.PathValue("path")
	})
	other := func(http.ResponseWriter, *http.Request) { gotName, gotPath = "-", "-" }
	ref.HandleFunc("/tiles/{file}", other) // as in New: TileJSON
	ref.HandleFunc("/", other)
	for _, raw := range []string{
		"/tiles/a/0/0/0.png", "/tiles/a/", "/tiles/a", "/tiles/", "/tiles", "/tiles/a.json",
		"/tiles/a/b", "/tiles/%61/0/0/0.png", "/tiles/a/%C3%BC/x%20y.png", "/tiles/ü/1/2/3.pbf",
		"/tilesx/a/b", "/x/tiles/a/b", "/", "/tiles/a/b/c/", "/tiles/a%20b/c",
	} {
		if checkPath(raw) != nil {
			t.Fatalf("%s: refused by checkPath; the table should hold routable paths", raw)
		}
		r := httptest.NewRequest("GET", raw, nil)
		gotName, gotPath = "", ""
		ref.ServeHTTP(httptest.NewRecorder(), r)
		name, path, ok := tileRoute(r.URL.Path)
		if gotName == "" {
			t.Fatalf("%s: the reference mux answered itself (a redirect?)", raw)
		}
		if muxOK := gotName != "-"; ok != muxOK || (ok && (name != gotName || path != gotPath)) {
			t.Errorf("%s: tileRoute = %q %q %v; ServeMux = %q %q %v", raw, name, path, ok, gotName, gotPath, muxOK)
		}
		// The proxy's own mux must route the same paths to the pattern.
		if _, pattern := f.p.mux.Handler(r); (pattern == tilePattern) != ok {
			t.Errorf("%s: proxy mux pattern %q, tileRoute %v", raw, pattern, ok)
		}
	}
}
