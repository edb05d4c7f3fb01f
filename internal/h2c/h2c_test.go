package h2c

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// settings is a client's HTTP2-Settings: SETTINGS_MAX_CONCURRENT_STREAMS
// 100, SETTINGS_INITIAL_WINDOW_SIZE 1 GiB, SETTINGS_ENABLE_PUSH 0 (curl's).
const settings = "AAMAAABkAARAAAAAAAIAAAAA"

// seen is what a handler saw of each request.
type seen struct {
	mu   sync.Mutex
	reqs []string
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	hop := ""
	for _, k := range []string{"Connection", "Upgrade", "Http2-Settings", "X-Hop"} {
		if r.Header.Get(k) != "" {
			hop += " " + k
		}
	}
	s.reqs = append(s.reqs, r.Proto+" "+r.URL.Path+hop)
}

func (s *seen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.reqs, ", ")
}

// serve starts base with an Upgrader over next on 127.0.0.1.
func serve(t *testing.T, base *http.Server, next http.Handler) (*Upgrader, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := New(base, next)
	base.Handler = u
	go base.Serve(ln)
	t.Cleanup(func() { base.Close() })
	return u, ln.Addr().String()
}

// client is one raw connection that upgrades and then speaks frames.
type client struct {
	t   *testing.T
	c   net.Conn
	br  *bufio.Reader
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	cl.enc = hpack.NewEncoder(&cl.buf)
	return cl
}

// upgrade sends an upgrade request for path (with the preface in the
// same write when pipelined) and reads the 101.
func (cl *client) upgrade(path string, pipelined bool) {
	cl.t.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, X-Hop\r\nX-Hop: 1\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\n\r\n"
	if pipelined {
		req += http2.ClientPreface
	}
	io.WriteString(cl.c, req)
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "h2c" {
		cl.t.Fatalf("upgrade: %v %v, want 101 h2c", resp, err)
	}
	if !pipelined {
		io.WriteString(cl.c, http2.ClientPreface)
	}
	cl.fr = http2.NewFramer(cl.c, cl.br)
	cl.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := cl.fr.WriteSettings(); err != nil {
		cl.t.Fatal(err)
	}
}

// get opens stream id for path.
func (cl *client) get(id uint32, path string) {
	cl.t.Helper()
	cl.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		cl.t.Fatal(err)
	}
}

// answers reads frames until every stream in want has ended (status and
// body by stream) or a GOAWAY or an error comes; it returns the server's
// SETTINGS too.
type answers struct {
	status, body map[uint32]string
	settings     map[http2.SettingID]uint32
	goAway       bool
	err          error
}

func (cl *client) read(want ...uint32) answers {
	a := answers{status: map[uint32]string{}, body: map[uint32]string{}, settings: map[http2.SettingID]uint32{}}
	open := map[uint32]bool{}
	for _, id := range want {
		open[id] = true
	}
	for len(open) > 0 {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			a.err = err
			return a
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				f.ForeachSetting(func(s http2.Setting) error { a.settings[s.ID] = s.Val; return nil })
				cl.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			a.status[f.StreamID] = f.PseudoValue("status")
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
		case *http2.DataFrame:
			a.body[f.StreamID] += string(f.Data())
			if f.StreamEnded() {
				delete(open, f.StreamID)
			}
		case *http2.GoAwayFrame:
			a.goAway = true
			return a
		case *http2.RSTStreamFrame:
			a.err = fmt.Errorf("stream %d reset: %v", f.StreamID, f.ErrCode)
			return a
		}
	}
	return a
}

func echo(s *seen) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.add(r)
		fmt.Fprintf(w, "%s %s", r.Proto, r.URL.Path)
	})
}

// TestUpgrade: the upgrade request is answered on stream 1 as HTTP/2,
// without its hop-by-hop headers, and later streams on the connection go
// to the same handler under the base server's stream limit; with the
// preface sent in the same write as the request too.
func TestUpgrade(t *testing.T) {
	for _, pipelined := range []bool{false, true} {
		t.Run(fmt.Sprint("pipelined=", pipelined), func(t *testing.T) {
			var s seen
			_, addr := serve(t, &http.Server{HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 7}}, echo(&s))
			cl := dial(t, addr)
			cl.upgrade("/a", pipelined)
			a := cl.read(1)
			if a.err != nil || a.status[1] != "200" || a.body[1] != "HTTP/2.0 /a" {
				t.Fatalf("stream 1: %+v", a)
			}
			if a.settings[http2.SettingMaxConcurrentStreams] != 7 {
				t.Errorf("SETTINGS %v: want MAX_CONCURRENT_STREAMS 7 from the base server", a.settings)
			}
			cl.get(3, "/b")
			if a := cl.read(3); a.err != nil || a.status[3] != "200" || a.body[3] != "HTTP/2.0 /b" {
				t.Fatalf("stream 3: %+v", a)
			}
			if got := s.String(); got != "HTTP/2.0 /a, HTTP/2.0 /b" {
				t.Errorf("handler saw %q", got)
			}
		})
	}
}

// TestNotUpgraded: a request that does not ask for h2c in full, or that
// carries a body, is served over HTTP/1.1 and the connection stays
// HTTP/1.1.
func TestNotUpgraded(t *testing.T) {
	var s seen
	_, addr := serve(t, &http.Server{}, echo(&s))
	up := "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
	for _, tc := range []struct{ name, req string }{
		{"no upgrade", "GET /p HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"websocket", "GET /p HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"HTTP/1.0", "GET /p HTTP/1.0\r\nHost: x\r\n" + up + "HTTP2-Settings: " + settings + "\r\n\r\n"},
		{"no settings", "GET /p HTTP/1.1\r\nHost: x\r\n" + up + "\r\n"},
		{"two settings", "GET /p HTTP/1.1\r\nHost: x\r\n" + up + "HTTP2-Settings: " + settings + "\r\nHTTP2-Settings: " + settings + "\r\n\r\n"},
		{"bad settings", "GET /p HTTP/1.1\r\nHost: x\r\n" + up + "HTTP2-Settings: !!!\r\n\r\n"},
		{"short settings", "GET /p HTTP/1.1\r\nHost: x\r\n" + up + "HTTP2-Settings: AAMA\r\n\r\n"},
		{"settings not in Connection", "GET /p HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: " + settings + "\r\n\r\n"},
		{"body", "POST /p HTTP/1.1\r\nHost: x\r\n" + up + "HTTP2-Settings: " + settings + "\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked", "POST /p HTTP/1.1\r\nHost: x\r\n" + up + "HTTP2-Settings: " + settings + "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, addr)
			for range 2 { // and the connection goes on as HTTP/1.1
				io.WriteString(cl.c, tc.req)
				resp, err := http.ReadResponse(cl.br, nil)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "HTTP/1.") {
					t.Fatalf("%d %q, want 200 over HTTP/1", resp.StatusCode, body)
				}
				if resp.Close {
					break
				}
			}
		})
	}
}

// TestShutdown: Shutdown sends GOAWAY to an upgraded connection, lets its
// stream in flight finish and returns once the connection has closed;
// meanwhile an upgrade request is served over HTTP/1.1.
func TestShutdown(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var s seen
	u, addr := serve(t, &http.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		echo(&s).ServeHTTP(w, r)
	}))
	cl := dial(t, addr)
	cl.upgrade("/slow", false)
	<-entered
	done := make(chan error, 1)
	go func() { done <- u.Shutdown(context.Background()) }()
	if a := cl.read(1); !a.goAway {
		t.Fatalf("want GOAWAY on drain, got %+v", a)
	}
	late := dial(t, addr)
	io.WriteString(late.c, "GET /late HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: "+settings+"\r\n\r\n")
	if resp, err := http.ReadResponse(late.br, nil); err != nil || resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" {
		t.Fatalf("upgrade while draining: %v %v, want HTTP/1.1 200", resp, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a stream in flight", err)
	default:
	}
	close(release)
	if a := cl.read(1); a.err != nil || a.body[1] != "HTTP/2.0 /slow" {
		t.Fatalf("stream in flight after GOAWAY: %+v", a)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := cl.fr.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Errorf("after Shutdown: %v, want the connection closed", err)
	}
}

// TestShutdownCancelled: when Shutdown's context ends with a stream
// still running, the connection is closed and the context's error
// returned.
func TestShutdownCancelled(t *testing.T) {
	entered := make(chan struct{}, 1)
	stuck := make(chan struct{})
	defer close(stuck)
	u, addr := serve(t, &http.Server{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-stuck
	}))
	cl := dial(t, addr)
	cl.upgrade("/stuck", false)
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Shutdown(ctx) }()
	if a := cl.read(1); !a.goAway {
		t.Fatalf("want GOAWAY, got %+v", a)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	for {
		_, err := cl.fr.ReadFrame()
		if err == nil {
			continue
		}
		if !closed(err) {
			t.Errorf("after Shutdown gave up: %v, want the connection closed", err)
		}
		break
	}
}

// closed reports whether a read's err means the server closed the
// connection, rather than the client's own deadline passing.
func closed(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestIdle: an upgraded connection idle past the base server's
// IdleTimeout is closed.
func TestIdle(t *testing.T) {
	var s seen
	_, addr := serve(t, &http.Server{IdleTimeout: 100 * time.Millisecond}, echo(&s))
	cl := dial(t, addr)
	cl.upgrade("/a", false)
	if a := cl.read(1); a.err != nil || a.body[1] != "HTTP/2.0 /a" {
		t.Fatalf("stream 1: %+v", a)
	}
	// No such stream: reads until GOAWAY or the connection ends. The
	// client's 30 s deadline passing instead is a failure.
	if a := cl.read(1 << 30); !a.goAway && !closed(a.err) {
		t.Fatalf("idle connection not closed: %v", a.err)
	}
}
