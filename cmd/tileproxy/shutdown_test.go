package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// TestGracefulShutdown: on SIGTERM /readyz turns 503 at once, the server
// keeps serving through drain_delay, an in-flight slow request completes,
// and run returns without error.
func TestGracefulShutdown(t *testing.T) {
	secret := strings.Repeat("k", 32)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.DrainDelay = config.Duration(time.Second)
	cfg.ShutdownTimeout = config.Duration(10 * time.Second)
	cfg.Auth.HMACSecret = secret
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
	cfg.ApplyDefaults()
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	slow := origin.FetcherFunc(func(ctx context.Context, req origin.Request) (*origin.Object, error) {
		close(entered)
		<-release
		return &origin.Object{Body: io.NopCloser(strings.NewReader("slow tile")), Size: 9, ContentType: "image/png"}, nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := proxy.New(&cfg, proxy.Deps{Verifier: v, Fetcher: slow, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: &cfg, log: log, proxy: p, registry: prometheus.NewRegistry()}

	ctx, sigterm := context.WithCancel(context.Background())
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	base := "http://" + <-addrs
	status := func(path string) int {
		resp, err := http.Get(base + path)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for deadline := time.Now().Add(5 * time.Second); status("/readyz") != 200; {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"a"}, TTL: time.Hour})
	type answer struct {
		code int
		body string
	}
	slowDone := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("GET", base+"/tiles/a/0/0/0.png", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slowDone <- answer{-1, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slowDone <- answer{resp.StatusCode, string(b)}
	}()
	<-entered
	sigterm()
	for deadline := time.Now().Add(5 * time.Second); status("/readyz") != 503; {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not turn 503 on shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := status("/healthz"); got != 200 {
		t.Errorf("/healthz while draining: %d", got)
	}
	close(release)
	if got := <-slowDone; got.code != 200 || got.body != "slow tile" {
		t.Fatalf("in-flight request: %+v, want 200 'slow tile'", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := status("/healthz"); got != -1 {
		t.Errorf("still listening after shutdown: %d", got)
	}
}
