package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/logging"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// TestReloadKeepsWhatIsHeld: the audit's probe. With
// streams_per_principal 1 and max_object_bytes 4 KiB, a reload that
// raises max_object_bytes to 32 MiB (which needs a restart, as the log
// says) must not let a second 16 MiB download of the same principal
// through; nor may the reload hand the principal a fresh rate bucket.
func TestReloadKeepsWhatIsHeld(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("big"); err != nil {
		t.Fatal(err)
	}
	large := bytes.Repeat([]byte("x"), 16<<20) // more than loopback's socket buffers
	if _, err := backend.PutObject("big", "t/0/0/0.png", map[string]string{"Content-Type": "image/png"}, bytes.NewReader(large), int64(len(large)), nil); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	defer s3.Close()
	file := filepath.Join(t.TempDir(), "tileproxy.yaml")
	write := func(maxObject string) {
		t.Helper()
		if err := os.WriteFile(file, fmt.Appendf(nil, `listen: 127.0.0.1:0
drain_delay: 0s
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
cache: {max_bytes: 64MiB, max_object_bytes: %s}
limits: {streams_per_principal: 1, rate: 0.001, burst: 3}
tilesets: [{name: big, bucket: big, prefix: t/}]
`, metricsSecret, s3.URL, maxObject), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("4KiB")
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, cfg, &logging.Logs{Log: log}, origin.Deps{Logger: log,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDRELOADTEST", "reload-test-secret", "")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	defer func() { cancel(); <-done }()
	url := "http://" + <-addrs + "/tiles/big/0/0/0.png"
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"big"}, Subject: "one", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	get := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	status := func() int {
		t.Helper()
		resp := get()
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The first download stays open: its body is not read.
	held := get()
	if held.StatusCode != 200 {
		t.Fatalf("first download: %d", held.StatusCode)
	}
	if code := status(); code != 429 {
		t.Fatalf("second download before the reload: %d, want 429 (streams)", code)
	}
	write("32MiB")
	if err := a.reload(file); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"field":"cache"`) {
		t.Error("the changed cache section was not reported as needing a restart")
	}
	if code := status(); code != 429 {
		t.Errorf("second download after the reload: %d, want 429: the running max_object_bytes (4 KiB) still decides what a stream is", code)
	}
	held.Body.Close()
	// Three requests have spent the burst of 3 at 0.001/s: a reload must
	// not refill it.
	if code := status(); code != 429 {
		t.Errorf("after the burst, across a reload: %d, want 429 (rate)", code)
	}
}

// TestReloadStopsWarm: a warm belongs to the configuration that started
// it. A reload that removes its tileset stops it: no fetch of that
// tileset starts after the reload, and the cache holds none of its tiles
// afterwards, not even from a fetch that was in flight.
func TestReloadStopsWarm(t *testing.T) {
	secret := strings.Repeat("w", 32)
	cfgFor := func(warm bool, tilesets ...config.Tileset) *config.Config {
		cfg := config.Default()
		cfg.Listen, cfg.MetricsListen, cfg.DrainDelay = "127.0.0.1:0", "", 0
		cfg.Auth.HMACSecret = secret
		cfg.Tilesets = tilesets
		if warm {
			cfg.Cache.Warm = config.Warm{Concurrency: 1, Tiles: []config.WarmTiles{{Tileset: "w", Zoom: "0-6"}}}
		}
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return &cfg
	}
	w := config.Tileset{Name: "w", Bucket: "tiles", Prefix: "w/", Format: "png", MaxZoom: 6, Bounds: []float64{-180, -85, 180, 85}}
	other := config.Tileset{Name: "o", Bucket: "tiles", Prefix: "o/", Format: "png"}
	var fetches atomic.Int32
	inside, release := make(chan struct{}, 1), make(chan struct{})
	var reloaded atomic.Bool
	fetcher := origin.FetcherFunc(func(ctx context.Context, req origin.Request) (*origin.Object, error) {
		if strings.HasPrefix(req.Key, "w/") {
			if reloaded.Load() {
				t.Errorf("a fetch of the removed tileset started after the reload: %s", req.Key)
			}
			if fetches.Add(1) == 5 {
				inside <- struct{}{}
				<-release // the fifth stays in flight across the reload
			}
		}
		return &origin.Object{Body: io.NopCloser(strings.NewReader("tile")), Size: 4, ContentType: "image/png"}, nil
	})
	var logs testenv.SyncBuffer
	a := handBuiltApp(t, &logs, fetcher, cfgFor(true, w, other))
	<-inside
	if err := a.apply(cfgFor(false, other)); err != nil {
		t.Fatal(err)
	}
	reloaded.Store(true)
	close(release)
	// The warm's last line: stopped, or (wrongly) done.
	// A bound on the wait, not a timing: a warm that never ends fails here
	// rather than hanging until go test's timeout.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logs.String(), "cache warm stopped") && !strings.Contains(logs.String(), "cache warm done"); {
		if time.Now().After(deadline) {
			t.Fatalf("the warm neither stopped nor ended:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "cache warm stopped") || !strings.Contains(logs.String(), "reloaded") {
		t.Errorf("the warm was not stopped by the reload, or does not say why:\n%s", logs.String())
	}
	if n := a.cache.RemoveIf(func(k string) bool { return strings.HasPrefix(k, "tiles/w/") }); n != 0 {
		t.Errorf("%d tiles of the removed tileset are cached after the reload", n)
	}
}

// handBuiltApp is a running app over fetcher, with a cache, whose reloads
// build proxies over the same fetcher.
func handBuiltApp(t *testing.T, logs io.Writer, fetcher origin.Fetcher, cfg *config.Config) *app {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, nil))
	c, err := cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	a := &app{log: log, registry: prometheus.NewRegistry(), ctx: ctx, cache: c}
	a.build = func(ctx context.Context, cfg *config.Config) (*generation, error) {
		v, err := auth.New(ctx, cfg.Auth, auth.Deps{})
		if err != nil {
			return nil, err
		}
		p, err := proxy.New(cfg, proxy.Deps{Verifier: v, Fetcher: fetcher, Cache: c, Logger: log})
		if err != nil {
			return nil, err
		}
		return &generation{cfg: cfg, proxy: p, authReady: v.Ready, cancel: func() {}}, nil
	}
	g, err := a.build(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.cfg, a.proxy, a.gen = g.cfg, g.proxy, g
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	<-addrs
	t.Cleanup(func() { cancel(); <-done })
	return a
}
