package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// TestReload: a valid file switches tilesets in one step, keeps the cached
// tiles of tilesets that stay and drops those of tilesets that go; an
// invalid one is refused with every problem logged and the old
// configuration serving on; a changed listener is reported as needing a
// restart. Counted in config_reloads_total and config_info.
func TestReload(t *testing.T) {
	var logs testenv.SyncBuffer
	a, base := runningApp(t, &logs)
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		return callCache(t, base+path, tok)
	}
	for _, p := range []string{"/tiles/demo/0/0/0.png", "/tiles/vector/0/0/0.pbf"} {
		if code, _ := get(p); code != 200 {
			t.Fatalf("%s before reload: %d", p, code)
		}
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Fatalf("demo tile not cached: %d %s", code, xc)
	}

	file := func(listen, tilesets string) string {
		p := filepath.Join(t.TempDir(), "tileproxy.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf(`listen: %q
metrics_listen: %q
drain_delay: 0s
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
tilesets: %s
`, listen, a.cfg.MetricsListen, metricsSecret, a.cfg.S3.Endpoint, tilesets)), 0o600)
		return p
	}
	// vector goes, extra comes, demo stays; the listener "changes".
	good := file("127.0.0.1:1", fmt.Sprintf(`[{name: demo, bucket: %s, prefix: raster/}, {name: extra, bucket: %s, prefix: extra/}]`, demoBucket, demoBucket))
	if err := a.reload(good); err != nil {
		t.Fatalf("valid reload refused: %v", err)
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Errorf("demo after reload: %d %s, want a HIT from the kept cache", code, xc)
	}
	if code, _ := get("/tiles/vector/0/0/0.pbf"); code != 404 {
		t.Errorf("removed tileset after reload: %d, want 404", code)
	}
	if code, _ := get("/tiles/extra.json"); code != 200 {
		t.Errorf("added tileset after reload: %d, want 200", code)
	}
	if n := a.cache.RemoveIf(func(k string) bool { return strings.HasPrefix(k, demoBucket+"/vector/") }); n != 0 {
		t.Errorf("%d cached tiles of the removed tileset survived the reload", n)
	}
	if !strings.Contains(logs.String(), `"field":"listen"`) {
		t.Error("a changed listen address was not reported as needing a restart")
	}

	// An invalid file: refused, every problem logged, demo still served.
	bad := file("127.0.0.1:1", fmt.Sprintf(`[{name: a, bucket: %s, prefix: a}, {name: b, bucket: %s, prefix: a-b/}]`, demoBucket, demoBucket))
	if err := a.reload(bad); err == nil {
		t.Fatal("invalid reload accepted")
	}
	if !strings.Contains(logs.String(), "must end in /") || !strings.Contains(logs.String(), "overlaps") {
		t.Errorf("the problems were not logged:\n%s", logs.String())
	}
	if code, xc := get("/tiles/demo/0/0/0.png"); code != 200 || xc != "HIT" {
		t.Errorf("demo after a refused reload: %d %s", code, xc)
	}
	if code, _ := get("/tiles/extra.json"); code != 200 {
		t.Errorf("the configuration in force was lost: extra %d", code)
	}
	if err := a.reload(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("a missing file was accepted")
	}
	want := `
# HELP tileproxy_config_reloads_total Configuration reloads (SIGHUP) by result (ok, error).
# TYPE tileproxy_config_reloads_total counter
tileproxy_config_reloads_total{result="error"} 2
tileproxy_config_reloads_total{result="ok"} 1
`
	if err := testutil.GatherAndCompare(a.registry, strings.NewReader(want), "tileproxy_config_reloads_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(a.registry, "tileproxy_config_info"); err != nil || n != 1 {
		t.Errorf("config_info series: %d %v, want 1", n, err)
	}
}

// TestReloadInFlightFinishesOnOld: a request that started before a reload
// finishes on the configuration it started with; the next one gets the new.
func TestReloadInFlightFinishesOnOld(t *testing.T) {
	secret := strings.Repeat("f", 32)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	cfgFor := func(cc string) *config.Config {
		cfg := config.Default()
		cfg.Listen, cfg.MetricsListen, cfg.DrainDelay = "127.0.0.1:0", "", 0
		cfg.Auth.HMACSecret = secret
		cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/", CacheControl: cc}}
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return &cfg
	}
	slow := origin.FetcherFunc(func(ctx context.Context, req origin.Request) (*origin.Object, error) {
		select {
		case entered <- struct{}{}:
			<-release // only the first request waits
		default:
		}
		return &origin.Object{Body: io.NopCloser(strings.NewReader("tile")), Size: 4, ContentType: "image/png"}, nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(t.Context())
	a := &app{log: log, registry: prometheus.NewRegistry(), ctx: ctx}
	a.build = func(ctx context.Context, cfg *config.Config) (*generation, error) {
		v, err := auth.New(ctx, cfg.Auth, auth.Deps{})
		if err != nil {
			return nil, err
		}
		p, err := proxy.New(cfg, proxy.Deps{Verifier: v, Fetcher: slow, Logger: log})
		if err != nil {
			return nil, err
		}
		return &generation{cfg: cfg, proxy: p, authReady: v.Ready, cancel: func() {}}, nil
	}
	g, err := a.build(ctx, cfgFor("private, max-age=1"))
	if err != nil {
		t.Fatal(err)
	}
	a.cfg, a.proxy, a.gen = g.cfg, g.proxy, g
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	defer func() { cancel(); <-done }()
	base := "http://" + <-addrs
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"a"}, TTL: time.Hour})
	get := func() (int, string, error) {
		req, _ := http.NewRequest("GET", base+"/tiles/a/0/0/0.png", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Cache-Control"), nil
	}
	type answer struct {
		code int
		cc   string
		err  error
	}
	first := make(chan answer, 1)
	go func() { c, cc, err := get(); first <- answer{c, cc, err} }()
	<-entered // the first request is inside the old configuration's origin
	if err := a.apply(cfgFor("private, max-age=2")); err != nil {
		t.Fatal(err)
	}
	close(release)
	if got := <-first; got.err != nil || got.code != 200 || got.cc != "private, max-age=1" {
		t.Errorf("request in flight across the reload: %+v, want 200 on the old Cache-Control", got)
	}
	if code, cc, err := get(); err != nil || code != 200 || cc != "private, max-age=2" {
		t.Errorf("request after the reload: %d %q %v, want the new Cache-Control", code, cc, err)
	}
}
