package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/certs"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// tlsApp runs the demo tiles (runningAppCfg) over TLS, with a test CA's
// certificate for 127.0.0.1; it returns the https:// base URL.
func tlsApp(t *testing.T, logs io.Writer, cfgMod func(*config.Config), mod func(*app)) (*app, string, *testCA) {
	t.Helper()
	ca, cert, key := newTestPair(t, 1)
	a, base := runningAppCfg(t, logs, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: cert, KeyFile: key}
		if cfgMod != nil {
			cfgMod(c)
		}
	}, mod)
	return a, strings.Replace(base, "http://", "https://", 1), ca
}

// h2raw is a client connection that writes HTTP/2 frames by hand, as an
// attacker would, past what a well-behaved client sends.
type h2raw struct {
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	host string
	// scheme is :scheme; next the first stream ID free (3 on an upgraded
	// connection, whose upgrade request is stream 1).
	scheme string
	next   uint32
}

// dialH2 opens a raw HTTP/2 connection over TLS. rcvbuf, when not 0, is
// the socket's receive buffer: small, the server's writes back up at once
// when the client does not read.
func dialH2(t *testing.T, base string, ca *testCA, rcvbuf int) *h2raw {
	t.Helper()
	host := strings.TrimPrefix(base, "https://")
	c, err := tls.DialWithDialer(rawDialer(rcvbuf), "tcp", host, &tls.Config{RootCAs: ca.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN negotiated %q, want h2", p)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second)) // every attack is bounded
	return newH2raw(t, c, c, host, "https", 1)
}

// rawDialer sets the socket's receive buffer to rcvbuf when not 0.
func rawDialer(rcvbuf int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if rcvbuf > 0 {
			rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		}
		return nil
	}}
}

// newH2raw sends the client preface and SETTINGS on c, read through r.
func newH2raw(t *testing.T, c net.Conn, r io.Reader, host, scheme string, next uint32) *h2raw {
	t.Helper()
	h := &h2raw{c: c, fr: http2.NewFramer(c, r), host: host, scheme: scheme, next: next}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// upgradeH2 opens a raw cleartext HTTP/2 connection by `Upgrade: h2c`
// from a GET of path with extra header pairs: that request is stream 1.
// rcvbuf is as dialH2's.
func upgradeH2(t *testing.T, base string, rcvbuf int, path string, extra ...string) *h2raw {
	t.Helper()
	host := strings.TrimPrefix(base, "http://")
	c, err := rawDialer(rcvbuf).Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
	for i := 0; i+1 < len(extra); i += 2 {
		req += extra[i] + ": " + extra[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("Upgrade: h2c: %v %v, want 101", resp, err)
	}
	return newH2raw(t, c, br, host, "http", 3)
}

// block is the HPACK block of a GET of path with extra header pairs.
func (h *h2raw) block(path string, extra ...string) []byte {
	h.hbuf.Reset()
	kv := append([]string{":method", "GET", ":scheme", h.scheme, ":authority", h.host, ":path", path}, extra...)
	for i := 0; i+1 < len(kv); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), h.hbuf.Bytes()...)
}

// drain reads frames until the connection ends, and reports whether a
// GOAWAY came and the statuses of the responses seen.
func (h *h2raw) drain() (goaway chan http2.ErrCode, statuses chan string) {
	goaway, statuses = make(chan http2.ErrCode, 1), make(chan string, 1<<16)
	go func() {
		defer close(statuses)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				select {
				case goaway <- f.ErrCode:
				default:
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID < h.next {
					break // the upgrade request's answer
				}
				select {
				case statuses <- f.PseudoValue("status"):
				default:
				}
			}
		}
	}()
	return goaway, statuses
}

// closedByServer reports whether the server closes c within d (a read
// ends otherwise than by the deadline).
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// watch samples the goroutines and heap in use until stopped, and
// returns the peaks.
func watch() (stop func() (goroutines int, heap uint64)) {
	var peakG atomic.Int64
	var peakH atomic.Uint64
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		var ms runtime.MemStats
		for {
			if g := int64(runtime.NumGoroutine()); g > peakG.Load() {
				peakG.Store(g)
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakH.Load() {
				peakH.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() (int, uint64) {
		close(done)
		<-exited
		return int(peakG.Load()), peakH.Load()
	}
}

// TestHTTP2Abuse floods one connection in the ways HTTP/2 servers have
// fallen to: the rapid-reset flood (CVE-2023-44487), SETTINGS and PING
// floods that are never read, a CONTINUATION flood (CVE-2023-45288,
// CVE-2024-27316), and a header list past the limit. Each time the process
// keeps answering another client over HTTP/2, its goroutines stay within
// three times one connection's stream bound and come back to where they
// were, and its heap grows by less than 64 MiB.
func TestHTTP2Abuse(t *testing.T) {
	for _, upgrade := range []bool{false, true} {
		t.Run(map[bool]string{false: "tls", true: "h2c upgrade"}[upgrade], func(t *testing.T) { testHTTP2Abuse(t, upgrade) })
	}
}

// testHTTP2Abuse: over TLS, or on connections upgraded to h2c (served by
// x/net's HTTP/2 server rather than net/http's, under the same limits).
func testHTTP2Abuse(t *testing.T, upgrade bool) {
	const streams = 100
	var base string
	var good *http.Client
	var open func(rcvbuf int) *h2raw
	if upgrade {
		_, base = runningAppCfg(t, io.Discard, func(c *config.Config) { c.HTTP2.MaxConcurrentStreams, c.H2C = streams, true }, nil)
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		good = &http.Client{Transport: tr, Timeout: 10 * time.Second}
		open = func(rcvbuf int) *h2raw { return upgradeH2(t, base, rcvbuf, "/healthz") }
	} else {
		var ca *testCA
		_, base, ca = tlsApp(t, io.Discard, func(c *config.Config) { c.HTTP2.MaxConcurrentStreams = streams }, nil)
		good = ca.client(true)
		good.Transport.(*http.Transport).DisableKeepAlives = false
		open = func(rcvbuf int) *h2raw { return dialH2(t, base, ca, rcvbuf) }
	}
	served := func(what string) {
		t.Helper()
		resp, err := good.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("%s: another client was not served: %v", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s: another client got %s %d", what, resp.Proto, resp.StatusCode)
		}
	}
	served("before")
	runtime.GC()
	baseG := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseH := ms.HeapInuse

	attacks := []struct {
		name   string
		rcvbuf int
		run    func(t *testing.T, h *h2raw)
	}{
		{"rapid reset", 0, func(t *testing.T, h *h2raw) {
			goaway, statuses := h.drain()
			block := h.block("/tiles/demo/3/1/2.png")
			sent := 0
			for id := h.next; id < 2*50_000; id += 2 {
				if h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
					h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break
				}
				sent++
				if sent%1000 == 0 {
					served("during the rapid-reset flood")
				}
			}
			// Go either answers every stream or, when the resets outrun
			// the handlers, ends the connection with ENHANCE_YOUR_CALM.
			code := "no GOAWAY"
			select {
			case c := <-goaway:
				code = "GOAWAY " + c.String()
			case <-time.After(2 * time.Second):
			}
			h.c.Close()
			n := 0
			for range statuses {
				n++
			}
			t.Logf("rapid reset: %d streams opened and reset, %d answered, %s", sent, n, code)
		}},
		{"SETTINGS and PING flood, never read", 4096, func(t *testing.T, h *h2raw) {
			sent := 0
			for i := 0; i < 2_000_000; i++ {
				var err error
				if i%2 == 0 {
					err = h.fr.WritePing(false, [8]byte{byte(i)})
				} else {
					err = h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
				}
				if err != nil {
					break
				}
				sent++
			}
			if !closedByServer(h.c, 10*time.Second) {
				t.Errorf("the connection stayed open after %d unread SETTINGS and PINGs", sent)
			}
			t.Logf("control flood: closed after %d frames written", sent)
		}},
		{"CONTINUATION flood", 0, func(t *testing.T, h *h2raw) {
			goaway, _ := h.drain()
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.next, BlockFragment: h.block("/healthz")}); err != nil {
				t.Fatal(err)
			}
			value := strings.Repeat("v", 1000)
			written := 0
			for i := 0; written < 64<<20; i++ {
				h.hbuf.Reset()
				h.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-flood-%d", i), Value: value, Sensitive: true})
				if err := h.fr.WriteContinuation(h.next, false, h.hbuf.Bytes()); err != nil {
					break
				}
				written += h.hbuf.Len()
			}
			if written >= 64<<20 {
				t.Fatalf("64 MiB of CONTINUATION frames were taken without END_HEADERS")
			}
			code := <-goaway
			t.Logf("CONTINUATION flood: cut after %d KiB, GOAWAY %v", written>>10, code)
		}},
		{"header list past the limit", 0, func(t *testing.T, h *h2raw) {
			_, statuses := h.drain()
			var extra []string
			for i := 0; i < 48; i++ {
				extra = append(extra, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 1000))
			}
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.next, BlockFragment: h.block("/healthz", extra...), EndStream: true, EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
			select {
			case st := <-statuses:
				if st != "431" {
					t.Errorf("48 KiB of headers: status %q, want 431", st)
				}
			case <-time.After(10 * time.Second):
				t.Error("48 KiB of headers: no answer")
			}
		}},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			stop := watch()
			h := open(at.rcvbuf)
			at.run(t, h)
			h.c.Close()
			peakG, peakH := stop()
			served("after")
			// A connection runs at most max_concurrent_streams handlers,
			// each waiting on one of as many stream workers; as many more
			// may have finished and wait to say so to the connection's
			// loop (net/http counts a handler until then).
			if limit := baseG + 3*streams + 64; peakG > limit {
				t.Errorf("goroutines peaked at %d (from %d; bound %d)", peakG, baseG, limit)
			}
			if peakH > baseH+64<<20 {
				t.Errorf("heap in use peaked at %d MiB (from %d MiB)", peakH>>20, baseH>>20)
			}
			for i := 0; runtime.NumGoroutine() > baseG+16; i++ {
				if i == 500 {
					t.Fatalf("goroutines: %d, from %d before the attack", runtime.NumGoroutine(), baseG)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestHTTP2Parity: what works over HTTP/1.1 works over HTTP/2 too: the
// token header and the __Host- session cookie, a CORS preflight, X-Cache,
// 304, Range and HEAD; the access line names the protocol and
// requests_by_protocol_total counts it.
func TestHTTP2Parity(t *testing.T) {
	var logs testenv.SyncBuffer
	a, base, ca := tlsApp(t, &logs, func(c *config.Config) {
		c.CORS.AllowedOrigins = []string{"https://maps.example.com"}
	}, nil)
	c := ca.client(true)
	c.Transport.(*http.Transport).DisableKeepAlives = false
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"demo"}, TTL: time.Hour})
	do := func(method, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s %s over %s", method, path, resp.Proto)
		}
		return resp, string(body)
	}
	const tile = "/tiles/demo/2/1/1.png"
	bearer := "Bearer " + tok
	first, body := do("GET", tile, "Authorization", bearer)
	if first.StatusCode != 200 || first.Header.Get("X-Cache") != "MISS" || len(body) == 0 {
		t.Fatalf("first GET: %d %q, %d bytes", first.StatusCode, first.Header.Get("X-Cache"), len(body))
	}
	etag := first.Header.Get("ETag")
	for _, tc := range []struct {
		name, method string
		hdr          []string
		code         int
		check        func(*http.Response, string) string
	}{
		{"hit", "GET", nil, 200, func(r *http.Response, b string) string {
			if r.Header.Get("X-Cache") != "HIT" || b != body {
				return "X-Cache " + r.Header.Get("X-Cache")
			}
			return ""
		}},
		{"304", "GET", []string{"If-None-Match", etag}, 304, nil},
		{"range", "GET", []string{"Range", "bytes=0-9"}, 206, func(r *http.Response, b string) string {
			if b != body[:10] {
				return "not the first 10 bytes"
			}
			return ""
		}},
		{"head", "HEAD", nil, 200, func(r *http.Response, b string) string {
			if b != "" || r.ContentLength != int64(len(body)) {
				return fmt.Sprintf("HEAD: %d bytes, Content-Length %d", len(b), r.ContentLength)
			}
			return ""
		}},
	} {
		resp, b := do(tc.method, tile, append([]string{"Authorization", bearer}, tc.hdr...)...)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.code)
		} else if tc.check != nil {
			if msg := tc.check(resp, b); msg != "" {
				t.Errorf("%s: %s", tc.name, msg)
			}
		}
	}
	pre, _ := do("OPTIONS", tile, "Origin", "https://maps.example.com", "Access-Control-Request-Method", "GET",
		"Access-Control-Request-Headers", "authorization")
	if pre.StatusCode/100 != 2 || pre.Header.Get("Access-Control-Allow-Origin") != "https://maps.example.com" {
		t.Errorf("preflight: %d, allow-origin %q", pre.StatusCode, pre.Header.Get("Access-Control-Allow-Origin"))
	}
	sess, _ := do("POST", "/auth/session", "Authorization", bearer)
	var cookie *http.Cookie
	for _, ck := range sess.Cookies() {
		if ck.Name == "__Host-tileproxy_token" && ck.Secure {
			cookie = ck
		}
	}
	if sess.StatusCode != 204 || cookie == nil {
		t.Fatalf("session: %d, cookies %v", sess.StatusCode, sess.Header["Set-Cookie"])
	}
	if resp, _ := do("GET", "/tiles/demo/2/0/1.png", "Cookie", cookie.Name+"="+cookie.Value); resp.StatusCode != 200 {
		t.Errorf("a tile by the session cookie: %d", resp.StatusCode)
	}
	if !strings.Contains(logs.String(), `"proto":"HTTP/2.0"`) {
		t.Errorf("no access line names HTTP/2.0:\n%s", logs.String())
	}
	if m := string(scrape(t, a.metricsAddr)); !strings.Contains(m, `tileproxy_requests_by_protocol_total{protocol="HTTP/2.0"} 8`) {
		t.Errorf("requests_by_protocol_total does not count the 8 HTTP/2 requests:\n%s", grepLines(m, "by_protocol"))
	}
}

// grepLines keeps the lines of s holding sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// slowTLSApp serves tileset "a" over TLS from fetch, with cfgMod applied;
// cancel starts the drain, and done says how run ended.
func slowTLSApp(t *testing.T, cfgMod func(*config.Config), fetch origin.Fetcher) (base string, ca *testCA, cancel func(), done chan error) {
	t.Helper()
	ca, cert, key := newTestPair(t, 1)
	cfg := config.Default()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", ""
	cfg.DrainDelay, cfg.ShutdownTimeout = 0, config.Duration(10*time.Second)
	cfg.Auth.HMACSecret = metricsSecret
	cfg.TLS = config.TLS{CertFile: cert, KeyFile: key}
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
	cfg.ApplyDefaults()
	if cfgMod != nil {
		cfgMod(&cfg)
	}
	scheme := "https://"
	if cfg.H2C {
		cfg.TLS, scheme = config.TLS{}, "http://"
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(&cfg, proxy.Deps{Verifier: v, Fetcher: fetch, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: &cfg, log: log, proxy: p, registry: prometheus.NewRegistry()}
	if cfg.TLS.On() {
		if a.certs, err = certs.New(cert, key, log); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(ctx, func(addr string) { addrs <- addr }) }()
	t.Cleanup(cancel)
	return scheme + <-addrs, ca, cancel, done
}

// gate is an origin whose fetches wait for release, after saying they
// started on entered.
func gate() (origin.Fetcher, chan string, chan struct{}) {
	entered, release := make(chan string, 16), make(chan struct{})
	return origin.FetcherFunc(func(ctx context.Context, req origin.Request) (*origin.Object, error) {
		entered <- req.Key
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &origin.Object{Body: io.NopCloser(strings.NewReader("slow tile")), Size: 9, ContentType: "image/png"}, nil
	}), entered, release
}

// heldBody is a large object's body whose first read says so on entered
// and waits for release.
type heldBody struct {
	entered chan<- string
	release <-chan struct{}
	left    int
	started bool
}

func (b *heldBody) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		b.entered <- "body"
		<-b.release
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), b.left)
	clear(p[:n])
	b.left -= n
	return n, nil
}

func (b *heldBody) Close() error { return nil }

// TestHTTP2StreamsPerPrincipal: limits.streams_per_principal counts
// HTTP/2 streams as it counts HTTP/1.1 connections: while a principal
// holds two large downloads on one connection, its third is refused.
func TestHTTP2StreamsPerPrincipal(t *testing.T) {
	const size = 8 << 20 // past cache.max_object_bytes: streamed, so counted
	entered, release := make(chan string, 16), make(chan struct{})
	fetch := origin.FetcherFunc(func(ctx context.Context, req origin.Request) (*origin.Object, error) {
		return &origin.Object{Body: &heldBody{entered: entered, release: release, left: size}, Size: size, ContentType: "image/png"}, nil
	})
	base, ca, _, _ := slowTLSApp(t, func(c *config.Config) { c.Limits.StreamsPerPrincipal = 2 }, fetch)
	c := ca.client(true)
	c.Transport.(*http.Transport).DisableKeepAlives = false
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"a"}, TTL: time.Hour})
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			return -2, resp.Proto
		}
		if n, _ := io.Copy(io.Discard, resp.Body); resp.StatusCode == 200 && n != size {
			return -3, fmt.Sprint(n, " bytes")
		}
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	codes := make(chan int, 2)
	for i := range 2 {
		go func() { code, _ := get(fmt.Sprintf("/tiles/a/3/%d/0.png", i)); codes <- code }()
		<-entered
	}
	if code, retry := get("/tiles/a/3/5/0.png"); code != 429 || retry == "" {
		t.Errorf("third stream: %d (Retry-After %q), want 429", code, retry)
	}
	close(release)
	for range 2 {
		if code := <-codes; code != 200 {
			t.Errorf("an admitted stream: %d", code)
		}
	}
}

// TestHTTP2Drain: on drain an HTTP/2 connection gets GOAWAY, and the
// stream in flight on it still finishes with its whole answer.
func TestHTTP2Drain(t *testing.T) {
	for _, upgrade := range []bool{false, true} {
		t.Run(map[bool]string{false: "tls", true: "h2c upgrade"}[upgrade], func(t *testing.T) { testHTTP2Drain(t, upgrade) })
	}
}

// testHTTP2Drain: over TLS, or on a connection upgraded to h2c whose
// upgrade request is the stream in flight (net/http's drain does not see
// that connection: internal/h2c's does).
func testHTTP2Drain(t *testing.T, upgrade bool) {
	fetch, entered, release := gate()
	base, ca, sigterm, done := slowTLSApp(t, func(c *config.Config) { c.H2C = upgrade }, fetch)
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(metricsSecret), Tilesets: []string{"a"}, TTL: time.Hour})
	var h *h2raw
	if upgrade {
		h = upgradeH2(t, base, 0, "/tiles/a/1/0/0.png", "Authorization", "Bearer "+tok)
	} else {
		h = dialH2(t, base, ca, 0)
		if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true,
			BlockFragment: h.block("/tiles/a/1/0/0.png", "authorization", "Bearer "+tok)}); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	sigterm()
	var goaway bool
	var status, body string
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended before the stream did: %v (GOAWAY %v, status %q, body %q)", err, goaway, status, body)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if !goaway {
				goaway = true
				close(release) // the answer comes after the GOAWAY
			}
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body += string(f.Data())
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
		if f.Header().Flags.Has(http2.FlagDataEndStream) && f.Header().StreamID == 1 {
			break
		}
	}
	if !goaway || status != "200" || body != "slow tile" {
		t.Errorf("drain: GOAWAY %v, status %q, body %q", goaway, status, body)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

// TestHTTP2Idle: a stream whose request never ends does not keep its
// slot once answered (the server resets it); an HTTP/2 connection with no
// stream open is closed at the idle timeout, as an idle HTTP/1.1
// keep-alive is, and one that never finishes its preface after
// net/http's fixed 10 s.
func TestHTTP2Idle(t *testing.T) {
	_, base, ca := tlsApp(t, io.Discard, nil, func(a *app) {
		a.limits = defaultLimits
		a.limits.idle = 300 * time.Millisecond
		a.limits.readHeader = 300 * time.Millisecond
	})
	h := dialH2(t, base, ca, 0)
	// HEADERS without END_STREAM: a request body that never comes.
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block("/healthz"), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var status string
	var reset bool
	for !reset {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("status %q, and the unfinished stream was not reset: %v", status, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			reset = f.StreamID == 1
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY before the unfinished stream was reset (status %q)", status)
		}
	}
	if status != "200" {
		t.Errorf("the unfinished request: status %q", status)
	}
	goaway, _ := h.drain()
	select {
	case <-goaway:
	case <-time.After(10 * time.Second):
		t.Error("an idle HTTP/2 connection stayed open past the idle timeout")
	}
	c, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: ca.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, http2.ClientPreface[:10]) // and no more
	if !closedByServer(c, 20*time.Second) {
		t.Error("a connection stuck in its preface stayed open")
	}
}
