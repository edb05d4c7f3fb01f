package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/logging"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

const metricsSecret = "metrics-test-secret-0123456789abcdef"

// runningApp starts the real wiring (newApp) against the in-process fake
// S3 with a metrics listener, and returns it with its base URL.
func runningApp(t *testing.T, logs io.Writer) (*app, string) {
	t.Helper()
	return runningAppWith(t, logs, nil)
}

// runningAppWith is runningApp with a hook to adjust the app (its
// connection limits) before it starts serving.
func runningAppWith(t *testing.T, logs io.Writer, mod func(*app)) (*app, string) {
	t.Helper()
	return runningAppCfg(t, logs, nil, mod)
}

// runningAppCfg is runningAppWith with cfgMod applied to the
// configuration before the app is built.
func runningAppCfg(t testing.TB, logs io.Writer, cfgMod func(*config.Config), mod func(*app)) (*app, string) {
	t.Helper()
	s3URL, closeS3, err := startFakeS3()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeS3)
	cfg := config.Default()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainDelay = 0
	cfg.Auth.HMACSecret = metricsSecret
	cfg.S3.Endpoint, cfg.S3.UsePathStyle = s3URL, true
	cfg.Tilesets = []config.Tileset{
		{Name: "demo", Bucket: demoBucket, Prefix: "raster/"},
		{Name: "vector", Bucket: demoBucket, Prefix: "vector/", Format: "pbf"},
	}
	cfg.ApplyDefaults()
	if cfgMod != nil {
		cfgMod(&cfg)
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := newApp(ctx, &cfg, &logging.Logs{Log: log, Access: accesslog.New(accesslog.JSON, logs)}, origin.Deps{Logger: log,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDMETRICSTEST", "metrics-aws-secret-key", "")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(a)
	}
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	base := "http://" + <-addrs
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return a, base
}

func call(t *testing.T, url, token string) int {
	t.Helper()
	code, _ := callCache(t, url, token)
	return code
}

// callCache GETs url with the token (if any) in the header and returns
// the status and X-Cache.
func callCache(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Cache")
}

// script sends a fixed sequence: 3 GETs of one tile (1 miss, 2 hits), a
// missing tile twice (miss, then negative), no token, a tileset not granted.
func script(t *testing.T, base, token string) {
	t.Helper()
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/tiles/demo/0/0/0.png", token, 200},
		{"/tiles/demo/0/0/0.png", token, 200},
		{"/tiles/demo/0/0/0.png", token, 200},
		{"/tiles/demo/9/9/9.png", token, 404},
		{"/tiles/demo/9/9/9.png", token, 404},
		{"/tiles/demo/0/0/0.png", "", 401},
		{"/tiles/vector/0/0/0.pbf", token, 403},
	} {
		if got := call(t, base+c.path, c.token); got != c.want {
			t.Fatalf("%s: got %d, want %d", c.path, got, c.want)
		}
	}
}

func TestMetricsMoveExactly(t *testing.T) {
	a, base := runningApp(t, io.Discard)
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"demo"}, TTL: time.Hour})
	script(t, base, tok)
	want := `
# HELP tileproxy_requests_total HTTP requests answered, by tileset and status code.
# TYPE tileproxy_requests_total counter
tileproxy_requests_total{code="200",tileset="demo"} 3
tileproxy_requests_total{code="401",tileset="demo"} 1
tileproxy_requests_total{code="404",tileset="demo"} 2
tileproxy_requests_total{code="403",tileset="vector"} 1
# HELP tileproxy_cache_requests_total Cache lookups by result: hit, miss, stale, negative.
# TYPE tileproxy_cache_requests_total counter
tileproxy_cache_requests_total{result="hit"} 2
tileproxy_cache_requests_total{result="miss"} 2
tileproxy_cache_requests_total{result="negative"} 1
tileproxy_cache_requests_total{result="stale"} 0
# HELP tileproxy_auth_failures_total Refused requests by reason (no_token, expired, bad_signature, not_granted, ...).
# TYPE tileproxy_auth_failures_total counter
tileproxy_auth_failures_total{reason="no_token"} 1
tileproxy_auth_failures_total{reason="not_granted"} 1
# HELP tileproxy_origin_requests_total Requests to S3 by tileset and result (ok, not_modified, not_found, denied, unavailable, timeout, canceled, range, saturated).
# TYPE tileproxy_origin_requests_total counter
tileproxy_origin_requests_total{result="not_found",tileset="demo"} 1
tileproxy_origin_requests_total{result="ok",tileset="demo"} 1
# HELP tileproxy_cache_objects Entries in the tile cache.
# TYPE tileproxy_cache_objects gauge
tileproxy_cache_objects 2
`
	if err := testutil.GatherAndCompare(a.registry, strings.NewReader(want),
		"tileproxy_requests_total", "tileproxy_cache_requests_total", "tileproxy_auth_failures_total",
		"tileproxy_origin_requests_total", "tileproxy_cache_objects"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(a.registry, "tileproxy_build_info"); n != 1 {
		t.Errorf("build_info series: %d", n)
	}
	if v, _ := testutil.GatherAndCount(a.registry, "tileproxy_request_duration_seconds"); v != 2 {
		t.Errorf("request_duration_seconds series: got %d, want one per tileset seen", v)
	}
}

// requireBin finds a Debian tool; scripts/test.sh installs them.
func requireBin(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Require(t, name, "it is not installed (apt-get install prometheus)")
	}
	return p
}

func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	return b
}

func TestPromtoolChecksMetrics(t *testing.T) {
	promtool := requireBin(t, "promtool")
	var logs testenv.SyncBuffer
	a, base := runningApp(t, &logs)
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"demo"}, TTL: time.Hour})
	script(t, base, tok)
	body := scrape(t, a.metricsAddr)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// Nothing secret in the metrics or the logs of the whole run.
	for _, secret := range []string{tok, metricsSecret, "metrics-aws-secret-key"} {
		if strings.Contains(string(body), secret) {
			t.Error("/metrics contains a secret")
		}
		if strings.Contains(logs.String(), secret) {
			t.Error("logs contain a secret")
		}
	}
	if !strings.Contains(logs.String(), `"msg":"request"`) || !strings.Contains(logs.String(), `"cache":"HIT"`) {
		t.Errorf("no JSON access lines with cache results in the logs")
	}
}

// TestPrometheusScrapes starts a real Prometheus that scrapes a test
// tileproxy, and asks its API for the request counter and the hit ratio.
func TestPrometheusScrapes(t *testing.T) {
	bin := requireBin(t, "prometheus")
	a, base := runningApp(t, io.Discard)
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"demo"}, TTL: time.Hour})

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tileproxy
    static_configs:
      - targets: ["%s"]
`, a.metricsAddr)), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	promAddr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promLog testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	query := func(q string) []any {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct{ Result []any }
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" {
			return nil
		}
		return r.Data.Result
	}
	const hitRatio = `sum(rate(tileproxy_cache_requests_total{result="hit"}[30s])) / sum(rate(tileproxy_cache_requests_total[30s]))`
	deadline := time.Now().Add(60 * time.Second)
	for {
		script(t, base, tok) // keep traffic flowing so rates exist
		reqs, ratio := query(`tileproxy_requests_total{tileset="demo",code="200"}`), query(hitRatio)
		if len(reqs) > 0 && len(ratio) > 0 {
			t.Logf("requests_total: %v\nhit ratio: %v", reqs, ratio)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus never returned tileproxy series (requests %v, ratio %v)\n%s", reqs, ratio, promLog.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if up := query(`up{job="tileproxy"} == 1`); len(up) != 1 {
		t.Errorf("scrape target not up: %v", up)
	}
}
