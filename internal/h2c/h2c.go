// Package h2c switches an HTTP/1.1 connection to cleartext HTTP/2 when
// the client asks with `Upgrade: h2c` (RFC 7540 §3.2), and serves the
// rest of the connection with golang.org/x/net/http2 under the limits of
// the http.Server it came in on.
//
// net/http serves cleartext HTTP/2 with prior knowledge
// (http.Protocols.SetUnencryptedHTTP2) but never upgrades. x/net's h2c
// package does, but it is deprecated, reads the first request's body
// into memory, and leaves the connections it hijacks out of the server's
// drain. An Upgrader upgrades only a request without a body (anything
// else is served over HTTP/1.1, as RFC 7540 allows), and its Shutdown
// sends GOAWAY to every upgraded connection and waits for their streams.
//
// x/net's http2.Server is deprecated in favour of http.Server.Protocols,
// which has no upgrade: its ServeConn with UpgradeRequest is the only way
// the Go project offers to serve one, and on Go 1.27 it delegates to
// net/http's own HTTP/2. TestShutdown and cmd/tileproxy's TestHTTP2Drain
// would show a Go release whose ServeConn stops taking part in h2's
// graceful shutdown.
package h2c

//lint:file-ignore SA1019 x/net's http2.Server is deprecated, but is the only upgrade path (see the package comment)

import (
	"bufio"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// Upgrader is an http.Handler that upgrades `Upgrade: h2c` requests and
// hands every other request, and every stream of an upgraded
// connection, to the next handler.
type Upgrader struct {
	base *http.Server
	next http.Handler
	h2   *http2.Server
	// hook exists only to reach h2's graceful shutdown:
	// http2.ConfigureServer registers it as hook's OnShutdown function,
	// and it is not exported otherwise.
	hook *http.Server

	mu      sync.Mutex
	closing bool
	conns   map[*upgraded]struct{}
	wg      sync.WaitGroup
}

// upgraded is one connection served by h2.
type upgraded struct {
	nc net.Conn
	// serving is closed once x/net has taken the connection in (its
	// first stream runs) or has given it up: from then on a graceful
	// shutdown of h2 reaches it.
	serving chan struct{}
	once    sync.Once
}

func (c *upgraded) served() { c.once.Do(func() { close(c.serving) }) }

// New returns an Upgrader for requests that base serves: upgraded
// connections take base's limits (HTTP2 settings, MaxHeaderBytes, read,
// write and idle timeouts, ErrorLog) and their streams go to next.
func New(base *http.Server, next http.Handler) *Upgrader {
	h2 := &http2.Server{IdleTimeout: base.IdleTimeout}
	if h2.IdleTimeout == 0 {
		h2.IdleTimeout = base.ReadTimeout // as net/http's own HTTP/2 does
	}
	hook := &http.Server{}
	// Cannot fail: it only checks a TLS configuration hook has none of.
	_ = http2.ConfigureServer(hook, h2)
	return &Upgrader{base: base, next: next, h2: h2, hook: hook, conns: map[*upgraded]struct{}{}}
}

// ServeHTTP upgrades r's connection when r asks for h2c and carries no
// body; otherwise next serves r over HTTP/1.1.
func (u *Upgrader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	settings, ok := wants(r)
	if !ok {
		u.next.ServeHTTP(w, r)
		return
	}
	c := u.acquire()
	if c == nil { // draining: no new HTTP/2 connection to send GOAWAY to
		u.next.ServeHTTP(w, r)
		return
	}
	defer u.release(c)
	nc, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		c.served()
		u.next.ServeHTTP(w, r)
		return
	}
	u.mu.Lock()
	c.nc = nc // for Shutdown to close, should its time run out
	u.mu.Unlock()
	defer nc.Close()
	// The 101 fits any socket buffer; then x/net sets its own deadlines
	// (preface, settings, idle, and per stream from base).
	nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"); err != nil {
		c.served()
		return
	}
	if err := rw.Flush(); err != nil {
		c.served()
		return
	}
	nc.SetDeadline(time.Time{})
	var conn net.Conn = nc
	if rw.Reader.Buffered() > 0 {
		conn = &bufConn{nc, rw.Reader} // the client's preface may have come with the request
	}
	first := asHTTP2(r)
	u.h2.ServeConn(conn, &http2.ServeConnOpts{
		Context:    r.Context(),
		BaseConfig: u.base,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r == first {
				c.served()
			}
			u.next.ServeHTTP(w, r)
		}),
		UpgradeRequest: first,
		Settings:       settings,
	})
	c.served()
}

// wants reports whether r asks to upgrade to h2c in a way this package
// honours, with the client's decoded HTTP2-Settings.
func wants(r *http.Request) ([]byte, bool) {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.TLS != nil ||
		!httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "h2c") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade") ||
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "HTTP2-Settings") {
		return nil, false
	}
	// A body would have to be read whole before switching: tiles are
	// fetched without one, so such a request simply stays on HTTP/1.1.
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return nil, false
	}
	// RFC 7540 §3.2.1: exactly one HTTP2-Settings, a SETTINGS payload
	// (6 bytes a setting) in base64url; else the server must not upgrade.
	v := r.Header["Http2-Settings"]
	if len(v) != 1 {
		return nil, false
	}
	s, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v[0], "="))
	if err != nil || len(s)%6 != 0 {
		return nil, false
	}
	return s, true
}

// asHTTP2 is r as its first stream: HTTP/2.0, without the hop-by-hop
// headers of the upgrade (RFC 9113 §8.2.2 forbids them in HTTP/2). Its
// context stays r's, which ends with the connection: x/net gives the
// upgrade request no stream context, so a client resetting stream 1 does
// not cancel it (its answer is dropped).
func asHTTP2(r *http.Request) *http.Request {
	h := r.Header.Clone()
	for _, v := range r.Header["Connection"] {
		for _, k := range strings.Split(v, ",") {
			h.Del(strings.TrimSpace(k))
		}
	}
	for _, k := range []string{"Connection", "Upgrade", "Http2-Settings", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Te"} {
		h.Del(k)
	}
	first := r.WithContext(r.Context())
	first.Proto, first.ProtoMajor, first.ProtoMinor = "HTTP/2.0", 2, 0
	first.Header = h
	first.Close = false
	first.Body = http.NoBody
	return first
}

// acquire registers a connection about to be upgraded; nil once
// Shutdown has begun.
func (u *Upgrader) acquire() *upgraded {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closing {
		return nil
	}
	c := &upgraded{serving: make(chan struct{})}
	u.conns[c] = struct{}{}
	u.wg.Add(1)
	return c
}

// release forgets a connection that has closed.
func (u *Upgrader) release(c *upgraded) {
	u.mu.Lock()
	delete(u.conns, c)
	u.mu.Unlock()
	u.wg.Done()
}

// Shutdown stops upgrading, sends GOAWAY to every upgraded connection
// and waits until their streams have finished and they have closed, or
// until ctx ends; then it closes those left and returns ctx's error.
// The http.Server's own Shutdown does not see these connections: they
// were hijacked from it.
func (u *Upgrader) Shutdown(ctx context.Context) error {
	u.mu.Lock()
	u.closing = true
	var pending []chan struct{}
	for c := range u.conns {
		pending = append(pending, c.serving)
	}
	u.mu.Unlock()
	u.hook.Shutdown(ctx) // GOAWAY to the connections x/net holds
	// One upgraded a moment ago may not be held yet: wait until it is,
	// then send GOAWAY again (once a connection: x/net ignores repeats).
	for _, ch := range pending {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
	if len(pending) > 0 {
		u.hook.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() {
		u.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	u.mu.Lock()
	for c := range u.conns {
		if c.nc != nil {
			c.nc.Close()
		}
	}
	u.mu.Unlock()
	return ctx.Err()
}

// bufConn reads what the HTTP/1.1 server had buffered before the
// connection itself.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}
