package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/certs"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

const secret = "e2e-browser-secret-0123456789abcdef"

// hit is one tile request as the proxy saw it.
type hit struct {
	phase       string
	path        string
	status      int
	conditional bool
	protoMajor  int
}

// recorder wraps the proxy and notes every tile request with the phase
// the test is in, so "zero new requests" is counted where it matters.
type recorder struct {
	next  http.Handler
	mu    sync.Mutex // protects phase and hits
	phase string
	hits  []hit
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: 200}
	rec.next.ServeHTTP(sw, r)
	tile := strings.HasSuffix(r.URL.Path, ".png") || strings.HasSuffix(r.URL.Path, ".pbf") || strings.HasSuffix(r.URL.Path, ".mvt")
	if !strings.HasPrefix(r.URL.Path, "/tiles/") || !tile || r.Method != "GET" {
		return
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.hits = append(rec.hits, hit{rec.phase, r.URL.Path, sw.code,
		r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "", r.ProtoMajor})
}

func (rec *recorder) setPhase(p string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.phase = p
}

func (rec *recorder) in(phase string) []hit {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []hit
	for _, h := range rec.hits {
		if h.phase == phase {
			out = append(out, h)
		}
	}
	return out
}

type env struct {
	proxyURL, allowedPages, otherPages string
	rec                                *recorder
	token                              string
	outDir                             string
	tr                                 transport
	// spki is the test certificate's key hash, for Chromium to trust it
	// (https only).
	spki string
}

// transport is how a test reaches tileproxy and its pages: plain
// HTTP/1.1, or HTTPS with HTTP/2 by ALPN (a throwaway certificate that
// Chromium is told to trust, the __Host- session cookie).
type transport struct {
	name  string
	https bool
}

// eachTransport runs f over HTTP/1.1 and over HTTPS + HTTP/2.
func eachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range []transport{{"http1", false}, {"https-h2", true}} {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

// checkProto fails when a hit came over another protocol than tr's:
// over HTTPS, Chromium must have negotiated HTTP/2.
func checkProto(t *testing.T, tr transport, hits []hit) {
	t.Helper()
	want := map[bool]int{false: 1, true: 2}[tr.https]
	for _, h := range hits {
		if h.protoMajor != want {
			t.Errorf("%s came over HTTP/%d, want HTTP/%d", h.path, h.protoMajor, want)
			return
		}
	}
}

// spkiOf is Chromium's --ignore-certificate-errors-spki-list value for
// the certificate in file.
func spkiOf(t *testing.T, file string) string {
	t.Helper()
	h, err := certs.KeyHash(file)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// pages serves testdata/e2e, and Leaflet from the copy the viewer embeds.
func pages() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/vendor/leaflet/", http.StripPrefix("/vendor/leaflet/", http.FileServer(http.Dir("../../proxy/viewer/vendor/leaflet"))))
	mux.Handle("/", http.FileServer(http.Dir("../../testdata/e2e")))
	return mux
}

// setup runs tileproxy (with its cache) on MinIO, CORS open to one page
// origin and closed to another, over tr.
func setup(t *testing.T, tr transport) *env { t.Helper(); return setupWith(t, tr, nil) }

// setupWith is setup with mod changing the configuration once the
// addresses are known (e.allowedPages and e.proxyURL are set).
func setupWith(t *testing.T, tr transport, mod func(*config.Config, *env)) *env {
	t.Helper()
	s3env := testenv.MinIO(t)
	bucket := s3env.Bucket(t)
	objs := map[string]testenv.Object{}
	filepath.Walk("../../testdata/tiles/raster", func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel("../../testdata/tiles", p)
			objs[filepath.ToSlash(rel)] = testenv.Object{Body: b, ContentType: "image/png"}
		}
		return nil
	})
	s3env.Put(t, bucket, objs)

	lnProxy, lnAllowed, lnOther := listen(t), listen(t), listen(t)
	scheme := map[bool]string{false: "http://", true: "https://"}[tr.https]
	e := &env{
		proxyURL:     scheme + lnProxy.Addr().String(),
		allowedPages: scheme + lnAllowed.Addr().String(),
		otherPages:   scheme + lnOther.Addr().String(),
		tr:           tr,
	}
	cfg := config.Default()
	cfg.PublicURL = e.proxyURL
	cfg.Auth.HMACSecret = secret
	cfg.Auth.Cookie.Secure = tr.https // __Host-tileproxy_token over https
	cfg.CORS.AllowedOrigins = []string{e.allowedPages}
	cfg.S3.Endpoint, cfg.S3.UsePathStyle = s3env.Endpoint, true
	cfg.Tilesets = []config.Tileset{{Name: "demo", Bucket: bucket, Prefix: "raster/", MaxZoom: 3}}
	if mod != nil {
		mod(&cfg, e)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(t.Context(), &cfg, origin.Deps{Logger: log,
		Credentials: credentials.NewStaticCredentialsProvider(s3env.AccessKey, s3env.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.FromConfig(cfg.Cache, 20*time.Second), cache.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(&cfg, proxy.Deps{Verifier: v, Fetcher: o, Cache: c, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	e.rec = &recorder{next: p}
	// Over https, the listeners are set up as tileproxy's own (the
	// certificate through certs, HTTP/2 by ALPN with its stream bound).
	var pair *certs.Reloader
	if tr.https {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		if err := certs.WriteSelfSigned(cert, key, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if pair, err = certs.New(cert, key, log); err != nil {
			t.Fatal(err)
		}
		e.spki = spkiOf(t, cert)
	}
	for ln, h := range map[net.Listener]http.Handler{lnProxy: e.rec, lnAllowed: pages(), lnOther: pages()} {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols),
			HTTP2: &http.HTTP2Config{MaxConcurrentStreams: config.Default().HTTP2.MaxConcurrentStreams}}
		srv.Protocols.SetHTTP1(true)
		if pair != nil {
			srv.Protocols.SetHTTP2(true)
			srv.TLSConfig = pair.Config("1.2")
			go srv.ServeTLS(ln, "", "")
		} else {
			go srv.Serve(ln)
		}
		t.Cleanup(func() { srv.Close() })
	}
	e.token, err = auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"demo"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.outDir = outDir()
	return e
}

// outDir is where screenshots go: $TILEPROXY_E2E_OUT, or a directory
// under the system's temporary one.
func outDir() string {
	d := os.Getenv("TILEPROXY_E2E_OUT")
	if d == "" {
		d = filepath.Join(os.TempDir(), "tileproxy-e2e")
	}
	os.MkdirAll(d, 0o755)
	return d
}

// browser starts a fresh headless Chromium (own profile, empty cache and
// cookies) and records the tile URLs it requests. spki, when not empty,
// names a certificate to trust (spkiOf).
func browser(t *testing.T, spki string) (context.Context, *urlLog) {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Require(t, "Chromium", "it is not installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox,
		chromedp.Flag("use-angle", "swiftshader"),
		chromedp.Flag("enable-unsafe-swiftshader", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(800, 700),
		chromedp.UserDataDir(t.TempDir()),
	)
	if spki != "" {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", spki))
	}
	urls := &urlLog{}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && strings.Contains(e.Request.URL, "/tiles/") && strings.HasSuffix(strings.SplitN(e.Request.URL, "?", 2)[0], ".png") {
			urls.add(e.Request.URL)
		}
	}))
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first Run starts the browser; its context must not time out.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	tctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	return tctx, urls
}

type urlLog struct {
	mu   sync.Mutex // protects list
	list []string
}

func (u *urlLog) add(s string) { u.mu.Lock(); u.list = append(u.list, s); u.mu.Unlock() }

// take returns the URLs seen since the last take.
func (u *urlLog) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.list
	u.list = nil
	return out
}

// waitStatus waits for the page to report want. A poll that starts while
// a navigation swaps the page's JavaScript context fails with "Cannot find
// context"; it is simply started again in the new page.
func waitStatus(want string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.body && (document.body.dataset.status || "").startsWith(%q)`, want),
		chromedp.WithPollingTimeout(60*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		var err error
		for range 20 {
			if _, err = poll(ctx, t); err == nil || !strings.Contains(err.Error(), "context") || ctx.Err() != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	})
}

// acrossNavigation runs a, again when a navigation interrupted it
// (bounded by attempts).
func acrossNavigation(a chromedp.Action[chromedp.Void]) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		var err error
		for range 50 {
			if _, err = a(ctx, t); err == nil || ctx.Err() != nil ||
				!(strings.Contains(err.Error(), "navigated") || strings.Contains(err.Error(), "context")) {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
		return err
	})
}

// await runs a page function that returns a promise, and waits for it.
func await(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](expr+".then(() => true)", chromedp.EvalAwaitPromise)(ctx, t)
		return err
	})
}

func status(ctx context.Context) string {
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? (document.body.dataset.status || "") : ""`))
	return s
}

// checkRendered asserts the map element shows real tiles: many colours,
// not one flat fill, and saves the screenshot.
func checkRendered(t *testing.T, ctx context.Context, e *env, name string) {
	t.Helper()
	checkColours(t, ctx, e, name, 8)
}

// checkColours is checkRendered with the least number of colours a real
// map shows: labelled raster tiles many, flat vector fills a few.
func checkColours(t *testing.T, ctx context.Context, e *env, name string, minColours int) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#map")))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	checkShot(t, shot, e.outDir, name, minColours)
}

// checkShot saves a screenshot and fails the test when it is blank: fewer
// than minColours colours, or one colour over 60% of it.
func checkShot(t *testing.T, shot []byte, dir, name string, minColours int) {
	t.Helper()
	out := filepath.Join(dir, name+".png")
	os.WriteFile(out, shot, 0o644)
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours, counts := map[uint32]int{}, 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[(r>>11)<<10|(g>>11)<<5|bl>>11]++
			counts++
		}
	}
	top := 0
	for _, n := range colours {
		top = max(top, n)
	}
	if len(colours) < minColours || float64(top)/float64(counts) > 0.6 {
		t.Errorf("%s looks blank: %d colours, the commonest covers %.0f%% (see %s)", name, len(colours), 100*float64(top)/float64(counts), out)
	}
}

var tileURL = regexp.MustCompile(`^https?://127\.0\.0\.1:\d+/tiles/demo/\d+/\d+/\d+\.png$`)

// libraryPages are the e2e pages under testdata/e2e, one per map library.
var libraryPages = []string{"leaflet", "maplibre", "ol", "img"}

func TestMapLibrariesInChromium(t *testing.T) { eachTransport(t, testMapLibraries) }

func testMapLibraries(t *testing.T, tr transport) {
	e := setup(t, tr)
	for _, page := range libraryPages {
		t.Run(page, func(t *testing.T) {
			url := fmt.Sprintf("%s/%s.html?proxy=%s#token=%s", e.allowedPages, page, e.proxyURL, e.token)
			ctx, urls := browser(t, e.spki)

			// First load: tiles render from the proxy.
			e.rec.setPhase(page + "/load1")
			if err := chromedp.Do(ctx, chromedp.Navigate(url), waitStatus("ready")); err != nil {
				t.Fatalf("first load: %v (page status %q)", err, status(ctx))
			}
			checkRendered(t, ctx, e, page)
			load1 := urls.take()
			seen := map[string]bool{}
			for _, h := range e.rec.in(page + "/load1") {
				seen[h.path] = true
				if h.status != 200 {
					t.Errorf("first load: %s answered %d", h.path, h.status)
				}
			}
			if len(load1) == 0 || len(seen) == 0 {
				t.Fatalf("first load requested no tiles (browser %d, proxy %d)", len(load1), len(seen))
			}
			checkProto(t, tr, e.rec.in(page+"/load1"))
			for _, u := range load1 {
				if !tileURL.MatchString(u) {
					t.Errorf("tile URL carries more than the tile: %s", u)
				}
			}

			// Second load of the page: the same URLs, from the browser cache.
			e.rec.setPhase(page + "/load2")
			if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(url), waitStatus("ready")); err != nil {
				t.Fatalf("second load: %v", err)
			}
			first := map[string]bool{}
			for _, u := range load1 {
				first[u] = true
			}
			for _, u := range urls.take() {
				if !first[u] {
					t.Errorf("second load asked for a URL the first did not: %s", u)
				}
			}
			if n := len(e.rec.in(page + "/load2")); n != 0 {
				t.Errorf("second load: %d tile requests reached the proxy, want 0 (browser cache)", n)
			}

			// Pan away (new tiles) and back: tiles already seen cost nothing.
			e.rec.setPhase(page + "/away")
			if err := chromedp.Do(ctx, await("panAway()")); err != nil {
				t.Fatal(err)
			}
			if len(e.rec.in(page+"/away")) == 0 {
				t.Error("panning away requested no new tiles: the pan did not happen")
			}
			e.rec.setPhase(page + "/back")
			if err := chromedp.Do(ctx, await("panBack()")); err != nil {
				t.Fatal(err)
			}
			for _, h := range e.rec.in(page + "/back") {
				if seen[h.path] {
					t.Errorf("panning back re-requested %s (%d)", h.path, h.status)
				}
			}

			// Reload: from the cache or revalidated, never a new 200.
			e.rec.setPhase(page + "/reload")
			if err := chromedp.Do(ctx, chromedp.Reload(), waitStatus("ready")); err != nil {
				t.Fatalf("reload: %v", err)
			}
			for _, h := range e.rec.in(page + "/reload") {
				if h.status != http.StatusNotModified {
					t.Errorf("reload: %s answered %d (conditional %v), want 304 or no request", h.path, h.status, h.conditional)
				}
			}
			if s := status(ctx); s != "ready" {
				t.Errorf("page status after reload: %q", s)
			}
		})
	}
}

// refusal loads each page in a fresh browser and requires it to report
// want, with no tile served to it, and at least min tile requests refused
// at the proxy (so the check cannot pass because nothing was asked).
func refusal(t *testing.T, e *env, phase, want string, min int, url func(page string) string) {
	for _, page := range libraryPages {
		t.Run(page, func(t *testing.T) {
			ctx, _ := browser(t, e.spki)
			e.rec.setPhase(page + "/" + phase)
			if err := chromedp.Do(ctx, chromedp.Navigate(url(page)), waitStatus(want)); err != nil {
				t.Fatalf("page status %q, want %q: %v", status(ctx), want, err)
			}
			refused := 0
			for _, h := range e.rec.in(page + "/" + phase) {
				if h.status == 200 {
					t.Errorf("%s was served (%s)", h.path, phase)
				} else {
					refused++
				}
			}
			if refused < min {
				t.Errorf("%d tile requests refused at the proxy, want at least %d", refused, min)
			}
			checkProto(t, e.tr, e.rec.in(page+"/"+phase))
		})
	}
}

func TestWithoutSessionThePageSays401(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		e := setup(t, tr)
		refusal(t, e, "nosession", "error: tiles 401", 1, func(page string) string {
			return fmt.Sprintf("%s/%s.html?proxy=%s", e.allowedPages, page, e.proxyURL) // no token
		})
	})
}

func TestOtherOriginOnlyWithCORS(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		e := setup(t, tr)
		// Same pages, same token, served from an origin CORS does not
		// allow: the session POST is refused, so the page never asks for
		// a tile.
		refusal(t, e, "other", "error: session", 0, func(page string) string {
			return fmt.Sprintf("%s/%s.html?proxy=%s#token=%s", e.otherPages, page, e.proxyURL, e.token)
		})
	})
}

// TestSignInAtProviderThenMap: a page signs in at a real OpenID provider
// (tools/testidp) with the authorization code flow and PKCE, through
// the provider's own login form, trades the access token for tileproxy's
// session cookie, and shows the map. tileproxy knows only the provider's
// issuer and a rule granting the tileset to the realm role the user holds.
func TestSignInAtProviderThenMap(t *testing.T) { eachTransport(t, testSignIn) }

func testSignIn(t *testing.T, tr transport) {
	var idp *testenv.IDP
	e := setupWith(t, tr, func(cfg *config.Config, e *env) {
		idp = testenv.StartIDP(t, e.allowedPages+"/oidc.html")
		yes := true
		cfg.Auth.HMACSecret = ""
		cfg.Auth.Issuers = []config.Issuer{{
			Issuer: idp.Issuer, Discovery: &yes, Audience: config.StringList{"maps-web"},
			Grants: []config.GrantRule{{Claim: "realm_access.roles", Values: map[string][]config.GrantValue{"analysts": config.Grants("demo")}}},
		}}
	})
	ctx, _ := browser(t, e.spki)
	page := e.allowedPages + "/oidc.html?issuer=" + url.QueryEscape(idp.Issuer) + "&proxy=" + url.QueryEscape(e.proxyURL)
	// The page sends the browser on to the provider's login form, which
	// may swap the page under a query: each step is retried then.
	for i, step := range []chromedp.Action[chromedp.Void]{
		acrossNavigation(chromedp.Navigate(page)),
		acrossNavigation(chromedp.WaitVisible("#username")),
		chromedp.SendKeys("#username", "test-user2"),
		chromedp.SendKeys("#password", "verysecure"),
		acrossNavigation(chromedp.Submit("#password")),
		acrossNavigation(waitStatus("ready")),
	} {
		if err := chromedp.Do(ctx, step); err != nil {
			url, _ := chromedp.Run(ctx, chromedp.Location())
			t.Fatalf("sign in and map, step %d: %v (at %s, page says %q)", i, err, url, status(ctx))
		}
	}
	checkRendered(t, ctx, e, "oidc-signin")
}
