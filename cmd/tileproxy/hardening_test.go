package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// TestMetricsListenerTimeouts is the regression test for a metrics
// listener without read or idle timeouts: a silent connection and an idle
// keep-alive are both closed by the server.
func TestMetricsListenerTimeouts(t *testing.T) {
	a, _ := runningAppWith(t, io.Discard, func(a *app) {
		a.limits = defaultLimits
		a.limits.readHeader = 300 * time.Millisecond
		a.limits.idle = 300 * time.Millisecond
	})
	closedByServer := func(c net.Conn) bool {
		// Bounded: 10 s of 100 ms reads, far past the 300 ms limits.
		buf := make([]byte, 4096)
		for range 100 {
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.Read(buf); err != nil && !os.IsTimeout(err) {
				return true
			}
		}
		return false
	}
	silent, err := net.Dial("tcp", a.metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedByServer(silent) {
		t.Error("a silent connection to the metrics listener stayed open")
	}
	idle, err := net.Dial("tcp", a.metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if !closedByServer(idle) {
		t.Error("an idle keep-alive connection to the metrics listener stayed open")
	}
}

// TestReadyWaitsForJWKS: with the JWKS down at start /readyz says 503
// (and tokens are refused), and it turns 200 once the JWKS answers.
func TestReadyWaitsForJWKS(t *testing.T) {
	var up atomic.Bool
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"keys": []}`))
	}))
	defer jwks.Close()
	cfg := config.Default()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.DrainDelay = 0
	cfg.ReadinessGrace = config.Duration(time.Hour)
	cfg.Auth.Algorithms = []string{"ES256"}
	cfg.Auth.JWKSURL = jwks.URL
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := auth.New(ctx, cfg.Auth, auth.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	none := origin.FetcherFunc(func(context.Context, origin.Request) (*origin.Object, error) { return nil, origin.ErrNotFound })
	p, err := proxy.New(&cfg, proxy.Deps{Verifier: v, Fetcher: none, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: &cfg, log: log, proxy: p, registry: prometheus.NewRegistry(),
		readiness: proxy.Readiness{AuthReady: v.Ready, Grace: cfg.ReadinessGrace.Duration()}}
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	defer func() { cancel(); <-done }()
	base := "http://" + <-addrs
	ready := func() int {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Several looks while the JWKS is down: never ready.
	for range 5 {
		if got := ready(); got != 503 {
			t.Fatalf("/readyz with the JWKS down: %d", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	up.Store(true)
	for deadline := time.Now().Add(20 * time.Second); ready() != 200; {
		if time.Now().After(deadline) {
			t.Fatal("never ready after the JWKS came up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckRefusesOverlappingPrefixes: check (and so start-up, which runs
// the same Validate) exits 1 naming both tilesets.
func TestCheckRefusesOverlappingPrefixes(t *testing.T) {
	t.Setenv("TP_TEST_SECRET", strings.Repeat("s", 32))
	for name, tc := range map[string]struct{ yaml, want string }{
		"no slash": {`tilesets:
  - {name: a, bucket: tiles, prefix: a}
  - {name: a-private, bucket: tiles, prefix: a-private/}`, `tilesets[1] (a-private).prefix: "a-private/" overlaps "a" of tileset a`},
		"public": {`tilesets:
  - {name: a, bucket: tiles, prefix: a/, cache_control: "public, max-age=600"}`, `tilesets[0] (a).cache_control: "public"`},
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(f, []byte("auth: {hmac_secret: \"${TP_TEST_SECRET}\"}\n"+tc.yaml+"\n"), 0o600)
			var out, errb bytes.Buffer
			if code := run([]string{"check", "-config", f}, &out, &errb); code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Errorf("check output lacks %q:\n%s", tc.want, errb.String())
			}
			errb.Reset()
			if code := run([]string{"serve", "-config", f}, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Errorf("serve: exit %d: %s", code, errb.String())
			}
		})
	}
}

// TestMain runs `tileproxy serve` instead of the tests when
// TILEPROXY_HELPER_CONFIG is set: serveProcess starts the test binary that
// way to get a real serve process, without a helper test that would show
// as skipped in every ordinary run.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("TILEPROXY_HELPER_CONFIG"); cfg != "" {
		os.Exit(run([]string{"serve", "-config", cfg}, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// served is `tileproxy serve` running in a process of its own.
type served struct {
	base   string // http://addr of the main listener
	path   string // its configuration file
	cmd    *exec.Cmd
	logs   *testenv.SyncBuffer
	waited chan error // receives the exit once, after stop or a crash
}

// processYAML is a configuration for serveProcess: loopback, no metrics
// listener, no drain delay or readiness grace, no access lines, HS256
// tokens of secret, S3 at endpoint; rest (tilesets and the rest) follows.
func processYAML(secret, endpoint, rest string) string {
	return fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: ""
drain_delay: 0s
readiness_grace: 0s
log: {format: text, level: info, access: false}
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
`, secret, endpoint) + rest
}

// minioCreds are the environment of a serveProcess reading MinIO with
// these keys.
func minioCreds(accessKey, secretKey string) []string {
	return []string{"AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey, "AWS_REGION=us-east-1"}
}

// serveProcess starts `tileproxy serve` with the YAML config in its own
// process (the test binary, through TestMain) and returns once it
// listens. The process is killed when the test ends, if still running.
func serveProcess(t testing.TB, yaml string, env ...string) *served {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "tileproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &served{path: cfgPath, cmd: exec.Command(os.Args[0]), logs: &testenv.SyncBuffer{}, waited: make(chan error, 1)}
	s.cmd.Env = append(append(os.Environ(), "TILEPROXY_HELPER_CONFIG="+cfgPath), env...)
	s.cmd.Stdout = s.logs
	pr, pw := io.Pipe()
	s.cmd.Stderr = io.MultiWriter(s.logs, pw)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.waited <- s.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if _, rest, ok := strings.Cut(sc.Text(), `"tileproxy listening" addr=`); ok {
				addr <- strings.Fields(rest)[0]
			}
		}
	}()
	select {
	case a := <-addr:
		s.base = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start:\n%s", s.logs.String())
	}
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *served) stop(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.waited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, s.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

// TestSIGHUPReloads: SIGHUP used to end the process without a drain (Go's
// default). Now the real serve command, in its own process, re-reads its
// file on SIGHUP: a valid one switches the tilesets, an invalid one is
// refused and the process serves on; SIGTERM still stops it cleanly.
func TestSIGHUPReloads(t *testing.T) {
	secret := strings.Repeat("h", 32)
	conf := func(tilesets string) string {
		return `listen: "127.0.0.1:0"
metrics_listen: ""
drain_delay: 0s
log: {format: text, level: info}
auth: {hmac_secret: "` + secret + `"}
s3: {endpoint: "http://127.0.0.1:1", use_path_style: true}
tilesets: ` + tilesets + "\n"
	}
	s := serveProcess(t, conf("[{name: a, bucket: tiles, prefix: a/}]"), "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y")
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tileJSON := func(name string) int {
		req, _ := http.NewRequest("GET", s.base+"/tiles/"+name+".json", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	hangup := func(wantLog string, n int) {
		t.Helper()
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); strings.Count(s.logs.String(), wantLog) < n; {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP:\n%s", wantLog, s.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if got := tileJSON("a"); got != 200 {
		t.Fatalf("a before reload: %d", got)
	}
	os.WriteFile(s.path, []byte(conf("[{name: b, bucket: tiles, prefix: b/}]")), 0o600)
	hangup("configuration reloaded", 1)
	if a, b := tileJSON("a"), tileJSON("b"); a != 404 || b != 200 {
		t.Fatalf("after reload: a %d (want 404), b %d (want 200)", a, b)
	}
	os.WriteFile(s.path, []byte(conf("[{name: c, bucket: tiles, prefix: c}]")), 0o600)
	hangup("configuration reload refused", 1)
	if b := tileJSON("b"); b != 200 {
		t.Fatalf("after a refused reload: b %d, want 200\n%s", b, s.logs.String())
	}
	s.stop(t)
}
