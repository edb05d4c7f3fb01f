package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/certs"
	"github.com/tileproxy/tileproxy/internal/testkit/delayproxy"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/internal/tilegen"
)

// The HTTP/2 benchmarks (bench/http2.sh) compare tileproxy with nginx
// serving the same 256 tiles (zoom 4) over TLS with the same throwaway
// certificate: tileproxy from its cache (hits), nginx from files.

const viewZoom = 4 // 256 tiles

// h2Peers is tileproxy and nginx, both over TLS and HTTP/2.
type h2Peers struct {
	tileproxy, nginx string // https://127.0.0.1:port
	// bare is net/http's own HTTP/2 server answering the tiles from a
	// map: the ceiling of any handler behind it.
	bare  string
	token string
	cert  string // the certificate both serve
	paths []string
}

func startH2Peers(b *testing.B) *h2Peers {
	b.Helper()
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if nginx, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			testenv.Require(b, "nginx", "it is not installed (apt-get install nginx-light)")
		}
	}
	dir := b.TempDir()
	// nginx's worker runs as nobody when started by root: it must read
	// the files (the temporary directories are the user's only).
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := certs.WriteSelfSigned(cert, key, []string{"127.0.0.1"}, time.Hour); err != nil {
		b.Fatal(err)
	}
	p := &h2Peers{cert: cert}
	// Both servers bound a connection's streams alike: tileproxy's
	// default (http2.max_concurrent_streams), or BENCH_STREAMS.
	streams := envInt("BENCH_STREAMS", config.Default().HTTP2.MaxConcurrentStreams)
	// The tiles, as files for nginx and in a map for the bare server.
	bodies := map[string][]byte{}
	for x := range 1 << viewZoom {
		for y := range 1 << viewZoom {
			path := fmt.Sprintf("/tiles/demo/%d/%d/%d.png", viewZoom, x, y)
			body, err := tilegen.PNG(viewZoom, x, y)
			if err != nil {
				b.Fatal(err)
			}
			file := filepath.Join(dir, "www", path)
			os.MkdirAll(filepath.Dir(file), 0o755)
			if err := os.WriteFile(file, body, 0o644); err != nil {
				b.Fatal(err)
			}
			p.paths = append(p.paths, path)
			bodies[path] = body
		}
	}
	bare, err := certs.New(cert, key, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	bln, _ := net.Listen("tcp", "127.0.0.1:0")
	bs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}), TLSConfig: bare.Config("1.2"), Protocols: new(http.Protocols), HTTP2: &http.HTTP2Config{MaxConcurrentStreams: streams}}
	bs.Protocols.SetHTTP1(true)
	bs.Protocols.SetHTTP2(true)
	go bs.ServeTLS(bln, "", "")
	b.Cleanup(func() { bs.Close() })
	p.bare = "https://" + bln.Addr().String()
	// tileproxy over TLS, its origin a fake S3 with the same tiles.
	s3URL, closeS3, err := startFakeS3Zoom(viewZoom)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(closeS3)
	_, base := runningAppCfg(b, io.Discard, func(c *config.Config) {
		c.S3.Endpoint = s3URL
		c.TLS = config.TLS{CertFile: cert, KeyFile: key}
		c.Log.Access = false
		c.Limits = config.Default().Limits
		c.HTTP2.MaxConcurrentStreams = streams
	}, nil)
	p.tileproxy = strings.Replace(base, "http://", "https://", 1)
	if p.token, err = auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"demo"}, TTL: time.Hour}); err != nil {
		b.Fatal(err)
	}
	// nginx, one worker as tileproxy is one process, HTTP/2 by ALPN.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes 1;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    http2_max_concurrent_streams %[5]d;
    client_body_temp_path %[1]s/body; proxy_temp_path %[1]s/proxy; fastcgi_temp_path %[1]s/fcgi; uwsgi_temp_path %[1]s/uwsgi; scgi_temp_path %[1]s/scgi;
    types { image/png png; }
    server {
        listen %[2]s ssl http2;
        ssl_certificate %[3]s;
        ssl_certificate_key %[4]s;
        root %[1]s/www;
        location /tiles/ { add_header Cache-Control "private, max-age=86400"; etag on; }
    }
}
`, dir, addr, cert, key, streams)), 0o600)
	cmd := exec.Command(nginx, "-c", conf, "-p", dir)
	// Its own process group, so its worker goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	p.nginx = "https://" + addr
	c := p.client()
	for _, base := range []string{p.tileproxy, p.nginx} {
		for i := 0; ; i++ {
			resp, err := c.Get(base + p.paths[0] + "?access_token=" + p.token)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			if i == 200 {
				logs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				b.Fatalf("%s did not come up: %v\n%s", base, err, logs)
			}
			time.Sleep(25 * time.Millisecond)
		}
	}
	// Every tile once through tileproxy: the runs measure hits.
	for _, path := range p.paths {
		resp, err := c.Get(p.tileproxy + path + "?access_token=" + p.token)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("warm %s: %v %v", path, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return p
}

func (p *h2Peers) client() *http.Client {
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(p.cert)
	pool.AppendCertsFromPEM(data)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

// h2loadRun is one h2load run: requests per second and the 99th
// percentile of request times.
type h2loadRun struct {
	rps float64
	p99 time.Duration
}

var h2loadRate = regexp.MustCompile(`finished in [^,]+, ([0-9.]+) req/s`)

// h2load runs Debian's h2load over base's tiles: requests, over conns
// connections of streams concurrent streams each, on one thread (pinned
// to BENCH_CLIENT_CPU when set).
func h2load(b *testing.B, bin, base, token string, paths []string, requests, conns, streams int) h2loadRun {
	b.Helper()
	dir := b.TempDir()
	uris := filepath.Join(dir, "uris")
	var list strings.Builder
	for _, path := range paths {
		list.WriteString(base + path + "\n")
	}
	os.WriteFile(uris, []byte(list.String()), 0o600)
	logFile := filepath.Join(dir, "log")
	args := []string{"-n", strconv.Itoa(requests), "-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams), "-t", "1",
		"-i", uris, "--log-file", logFile, "-H", "Authorization: Bearer " + token}
	name := bin
	if cpu := os.Getenv("BENCH_CLIENT_CPU"); cpu != "" {
		args = append([]string{"-c", cpu, bin}, args...)
		name = "taskset"
	}
	out, err := exec.Command(name, args...).CombinedOutput()
	m := h2loadRate.FindSubmatch(out)
	if err != nil || m == nil || !strings.Contains(string(out), fmt.Sprintf("%d succeeded", requests)) ||
		!strings.Contains(string(out), "Application protocol: h2") {
		b.Fatalf("h2load %s: %v\n%s", base, err, out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	f, err := os.Open(logFile)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var times []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 3 && fields[1] == "200" {
			us, _ := strconv.Atoi(fields[2])
			times = append(times, us)
		}
	}
	if len(times) != requests {
		b.Fatalf("h2load %s logged %d answers of 200, want %d", base, len(times), requests)
	}
	slices.Sort(times)
	return h2loadRun{rps: rps, p99: time.Duration(times[len(times)*99/100]) * time.Microsecond}
}

// BenchmarkH2Load: cache hits over HTTP/2 and TLS with h2load, tileproxy,
// nginx (http2, one worker) and a bare net/http HTTP/2 server in turn,
// rounds interleaved; reported: each one's best req/s, the p99 of that
// round, and the ratios of bests to nginx.
func BenchmarkH2Load(b *testing.B) {
	bin, err := exec.LookPath("h2load")
	if err != nil {
		testenv.Require(b, "h2load", "it is not installed (apt-get install nghttp2-client)")
	}
	p := startH2Peers(b)
	rounds := envInt("BENCH_ROUNDS", 3)
	requests := envInt("BENCH_REQUESTS", 200_000)
	names := []string{"tileproxy", "nginx", "net/http"}
	b.ResetTimer()
	for range b.N {
		var best [3]h2loadRun
		for r := range rounds {
			for i, base := range []string{p.tileproxy, p.nginx, p.bare} {
				run := h2load(b, bin, base, p.token, p.paths, requests, 8, 32)
				fmt.Fprintf(os.Stderr, "round %d %-9s %9.0f req/s  p99 %v\n", r+1, names[i], run.rps, run.p99)
				if run.rps > best[i].rps {
					best[i] = run
				}
			}
		}
		for i, n := range []string{"tileproxy", "nginx", "nethttp"} {
			b.ReportMetric(best[i].rps, n+"-req/s")
			b.ReportMetric(float64(best[i].p99.Microseconds()), n+"-p99-µs")
		}
		b.ReportMetric(best[0].rps/best[1].rps, "tileproxy/nginx")
		b.ReportMetric(best[2].rps/best[1].rps, "nethttp/nginx")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// mapViewPage is a page of 256 plain <img> tags, one per tile of zoom 4,
// from ?base= with ?token= in the query; window.lastTile is the time from
// navigation to the last tile loaded, window.failed how many failed.
const mapViewPage = `<!doctype html><meta charset=utf-8><title>map view</title>
<style>body{margin:0;line-height:0} img{width:16px;height:16px}</style><body><script>
const q = new URLSearchParams(location.search), base = q.get("base"), token = q.get("token");
let left = 256, failed = 0;
for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) {
  const img = new Image();
  img.onload = img.onerror = (e) => { if (e.type === "error") failed++; if (--left === 0) { window.failed = failed; window.lastTile = performance.now(); } };
  img.src = base + "/tiles/demo/4/" + x + "/" + y + ".png" + (token ? "?access_token=" + token : "");
  document.body.appendChild(img);
}
</script>`

// BenchmarkMapView: real Chromium loads a page of 256 distinct tiles
// through a delay proxy adding 25 ms each way (a 50 ms round trip), in a
// fresh browser context each time (no cache, no connection): tileproxy
// over TLS with HTTP/1.1 (Chromium with --disable-http2: six connections
// per host), tileproxy over HTTP/2, and nginx over HTTP/2 on the same
// files, interleaved; reported: each one's median time from navigation to
// the last tile, and the ratios.
func BenchmarkMapView(b *testing.B) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testenv.Require(b, "Chromium", "it is not installed (apt-get install chromium)")
	}
	p := startH2Peers(b)
	delay := time.Duration(envInt("BENCH_DELAY_MS", 25)) * time.Millisecond
	proxied := map[string]string{}
	for _, base := range []string{p.tileproxy, p.nginx} {
		dp, err := delayproxy.New(delayproxy.Config{Target: strings.TrimPrefix(base, "https://"), Delay: delay})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { dp.Close() })
		proxied[base] = "https://" + dp.Addr()
	}
	// The page, from a server of its own without delay.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	page := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, mapViewPage)
	}), ReadHeaderTimeout: 10 * time.Second}
	go page.Serve(ln)
	b.Cleanup(func() { page.Close() })
	pageURL := "http://" + ln.Addr().String() + "/"

	spki, err := certs.KeyHash(p.cert)
	if err != nil {
		b.Fatal(err)
	}
	browsers := map[bool]context.Context{}
	for _, h2 := range []bool{true, false} {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.Flag("headless", "new"),
			chromedp.NoSandbox, chromedp.Flag("disable-component-update", true), chromedp.UserDataDir(b.TempDir()),
			chromedp.Flag("ignore-certificate-errors-spki-list", spki))
		if !h2 {
			opts = append(opts, chromedp.Flag("disable-http2", true))
		}
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancelB := chromedp.NewContext(actx)
		b.Cleanup(func() { cancelB(); cancelA() })
		if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
			b.Fatalf("start Chromium: %v", err)
		}
		browsers[h2] = ctx
	}
	type setup struct {
		name  string
		h2    bool
		base  string
		token string
	}
	setups := []setup{
		{"tileproxy-h1", false, proxied[p.tileproxy], p.token},
		{"tileproxy-h2", true, proxied[p.tileproxy], p.token},
		{"nginx-h2", true, proxied[p.nginx], ""},
	}
	load := func(s setup) time.Duration {
		ctx, cancel := chromedp.NewContext(browsers[s.h2], chromedp.WithNewBrowserContext())
		defer cancel()
		ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
		defer cancelT()
		url := pageURL + "?base=" + s.base + "&token=" + s.token
		loaded := chromedp.Poll[chromedp.Void]("window.lastTile !== undefined", chromedp.WithPollingInterval(10*time.Millisecond))
		if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := loaded(ctx, t)
			return err
		})); err != nil {
			b.Fatalf("%s: %v", s.name, err)
		}
		ms, err := chromedp.Run(ctx, chromedp.Evaluate[float64]("window.lastTile"))
		if err != nil {
			b.Fatal(err)
		}
		failed, err := chromedp.Run(ctx, chromedp.Evaluate[int]("window.failed"))
		if err != nil {
			b.Fatal(err)
		}
		if failed != 0 {
			b.Fatalf("%s: %d of 256 tiles failed", s.name, failed)
		}
		return time.Duration(ms * float64(time.Millisecond))
	}
	rounds := envInt("BENCH_ROUNDS", 5)
	b.ResetTimer()
	for range b.N {
		times := make([][]time.Duration, len(setups))
		for r := range rounds {
			for i, s := range setups {
				d := load(s)
				times[i] = append(times[i], d)
				fmt.Fprintf(os.Stderr, "round %d %-13s %v\n", r+1, s.name, d.Round(time.Millisecond))
			}
		}
		med := make([]float64, len(setups))
		for i := range setups {
			slices.Sort(times[i])
			med[i] = float64(times[i][len(times[i])/2].Milliseconds())
			b.ReportMetric(med[i], setups[i].name+"-ms")
		}
		b.ReportMetric(med[1]/med[0], "h2/h1")
		b.ReportMetric(med[1]/med[2], "h2/nginx")
	}
}
