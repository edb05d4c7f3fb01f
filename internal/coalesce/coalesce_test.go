package coalesce

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// recConn is a net.Conn that records each Write reaching it.
type recConn struct {
	net.Conn // nil: only what the tests call is implemented
	mu       sync.Mutex
	writes   []string
	err      error
	closed   bool
	halfShut bool
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, string(p))
	return len(p), nil
}
func (c *recConn) Read(p []byte) (int, error)       { return 0, io.EOF }
func (c *recConn) SetDeadline(time.Time) error      { return nil }
func (c *recConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recConn) SetWriteDeadline(time.Time) error { return nil }
func (c *recConn) Close() error                     { c.closed = true; return nil }
func (c *recConn) CloseWrite() error                { c.halfShut = true; return nil }
func (c *recConn) all() string                      { return strings.Join(c.writes, "") }
func (c *recConn) count() int                       { c.mu.Lock(); defer c.mu.Unlock(); return len(c.writes) }
func (c *recConn) sent() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.writes...)
}
func wrap(t *testing.T, hold int, under *recConn) net.Conn {
	l, err := NewListener(Config{Hold: hold}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &conn{Conn: under, l: l}
}

func TestHoldsUntilServerTurnsAway(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(net.Conn)
	}{
		{"read", func(c net.Conn) { c.Read(make([]byte, 1)) }},
		{"read deadline", func(c net.Conn) { c.SetReadDeadline(time.Now()) }},
		{"write deadline", func(c net.Conn) { c.SetWriteDeadline(time.Time{}) }},
		{"deadline", func(c net.Conn) { c.SetDeadline(time.Time{}) }},
		{"close", func(c net.Conn) { c.Close() }},
		{"close write", func(c net.Conn) { c.(interface{ CloseWrite() error }).CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var u recConn
			c := wrap(t, 100, &u)
			c.Write([]byte("head "))
			c.Write([]byte("body"))
			if u.count() != 0 {
				t.Fatalf("%d writes reached the connection; want small writes held", u.count())
			}
			tc.after(c)
			if got := u.sent(); len(got) != 1 || got[0] != "head body" {
				t.Fatalf("after %s the connection got %q; want one write of both", tc.name, got)
			}
		})
	}
}

func TestLargeWriteTakesHeldAlong(t *testing.T) {
	var u recConn
	c := wrap(t, 100, &u)
	c.Write([]byte(strings.Repeat("h", 60)))
	big := strings.Repeat("b", 500)
	if n, err := c.Write([]byte(big)); n != 500 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	// A non-TCP conn gets net.Buffers as separate writes; on TCP it is one
	// writev (TestFewerSyscalls). Here: order and nothing held after.
	if u.all() != strings.Repeat("h", 60)+big {
		t.Fatalf("got %d bytes in the wrong order", len(u.all()))
	}
	n := u.count()
	c.SetWriteDeadline(time.Time{})
	if u.count() != n {
		t.Fatal("something was still held after a large write")
	}
	// With nothing held, a large write goes straight through.
	c.Write([]byte(big))
	if u.count() != n+1 {
		t.Fatalf("large write with nothing held: %d writes, want 1", u.count()-n)
	}
}

// TestDefaultHoldIsOneBuffer: by default what net/http flushes from its
// 4 KiB buffer is held, and the next write of any size takes it along at
// once rather than being copied into the hold (a 10 KB tile's body bytes
// would be copied twice otherwise).
func TestDefaultHoldIsOneBuffer(t *testing.T) {
	var u recConn
	c := wrap(t, 0, &u)
	c.Write(bytes.Repeat([]byte("h"), 4096))
	if u.count() != 0 {
		t.Fatal("a full net/http buffer was not held")
	}
	c.Write(bytes.Repeat([]byte("b"), 6000))
	if got := len(u.all()); got != 4096+6000 {
		t.Fatalf("after the second write %d bytes reached the connection; want both writes, 10096", got)
	}
}

func TestEmptyWrite(t *testing.T) {
	var u recConn
	c := wrap(t, 100, &u)
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	c.SetWriteDeadline(time.Time{})
	if u.count() != 0 {
		t.Fatalf("an empty write reached the connection: %q", u.sent())
	}
}

func TestWriteErrorSticks(t *testing.T) {
	u := recConn{err: errors.New("reset")}
	c := wrap(t, 100, &u)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("held write failed early: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil || err.Error() != "reset" {
		t.Fatalf("Read after a failed flush: %v; want the write error", err)
	}
	if _, err := c.Write([]byte("y")); err == nil {
		t.Fatal("a write after a failed one succeeded")
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err == nil {
		t.Fatal("CloseWrite hid the write error")
	}
	c.Close()
	if !u.closed {
		t.Fatal("Close did not close")
	}
}

func TestValidate(t *testing.T) {
	if _, err := NewListener(Config{Hold: -1}, nil); err == nil {
		t.Fatal("negative Hold accepted")
	}
	l, err := NewListener(Config{}, nil)
	if err != nil || l.hold != DefaultHold {
		t.Fatalf("zero Config: %v, hold %d", err, l.hold)
	}
}

// serve starts an HTTP server on a real TCP listener, wrapped or not,
// answering /n with n bytes (?split: in 3000-byte writes; ?close: then
// closing the connection).
func serve(t *testing.T, wrapped bool) string {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener = tcp
	if wrapped {
		if ln, err = NewListener(Config{}, tcp); err != nil {
			t.Fatal(err)
		}
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost { // echo the body's length
				b, _ := io.ReadAll(r.Body)
				fmt.Fprint(w, len(b))
				return
			}
			var n int
			fmt.Sscanf(r.URL.Path, "/%d", &n)
			if r.URL.Query().Has("close") {
				w.Header().Set("Connection", "close")
			}
			w.Header().Set("Content-Length", fmt.Sprint(n))
			body := bytes.Repeat([]byte("t"), n)
			piece := len(body) // one write, as a cache hit does
			if r.URL.Query().Has("split") {
				piece = 3000 // uneven pieces, as a copy loop makes
			}
			for len(body) > 0 {
				k := min(len(body), piece)
				w.Write(body[:k])
				body = body[k:]
			}
		}),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + tcp.Addr().String()
}

// TestHTTPResponsesIntact runs real HTTP/1.1 through wrapped connections:
// sizes around the hold and net/http's buffers, keep-alive, pipelining,
// and a server-side close.
func TestHTTPResponsesIntact(t *testing.T) {
	base := serve(t, true)
	c := &http.Client{}
	for _, n := range []int{0, 1, 2047, 2048, 4096, 4000, 5000, 16 << 10, 20000, 1 << 20} {
		for _, q := range []string{"", "?close", "?split", "?split&close"} {
			resp, err := c.Get(fmt.Sprintf("%s/%d%s", base, n, q))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) != n || strings.Trim(string(b), "t") != "" {
				t.Fatalf("/%d%s: %d bytes, %v", n, q, len(b), err)
			}
		}
	}
	// Pipelined: three requests in one write, three whole answers back.
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprint(conn, "GET /10 HTTP/1.1\r\nHost: x\r\n\r\nGET /20000 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	for _, n := range []int{10, 20000, 3} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined /%d: %v", n, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if len(b) != n {
			t.Fatalf("pipelined /%d: %d bytes", n, len(b))
		}
	}
}

// TestExpectContinue: net/http writes "100 Continue" when the handler
// starts reading the body, then reads. The client sends the body only
// after seeing it, so the wrapped connection must not sit on it.
func TestExpectContinue(t *testing.T) {
	base := serve(t, true)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	// Generous: this bounds a hang, it does not time the server.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("waiting for 100 Continue: %q, %v", line, err)
	}
	br.ReadString('\n') // the blank line after it
	fmt.Fprint(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "5" {
		t.Fatalf("server read %q bytes; want 5", b)
	}
}

// writeSyscalls is this process's count of write system calls so far.
func writeSyscalls(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no /proc/self/io under CI: %v", err)
		}
		t.Skipf("no /proc/self/io (%v): cannot count system calls here", err)
	}
	var n int
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			fmt.Sscan(v, &n)
		}
	}
	return n
}

// TestFewerSyscalls counts write system calls for the same keep-alive
// requests through a plain and a wrapped listener: a 20 KB response takes
// net/http two writes and the wrapped connection one.
func TestFewerSyscalls(t *testing.T) {
	const reqs = 200
	count := func(wrapped bool) int {
		base := serve(t, wrapped)
		c := &http.Client{Transport: &http.Transport{}}
		defer c.CloseIdleConnections()
		get := func() {
			resp, err := c.Get(base + "/20000")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		get() // dial outside the count
		before := writeSyscalls(t)
		for range reqs {
			get()
		}
		return writeSyscalls(t) - before
	}
	plain, wrapped := count(false), count(true)
	t.Logf("write syscalls for %d requests (client and server): plain %d, wrapped %d", reqs, plain, wrapped)
	// The client writes one request per call in both; the server saves
	// one write per response. Allow a little for the runtime's own.
	if plain < 3*reqs*9/10 {
		t.Fatalf("plain: %d writes; expected about 3 per request, so the count is not measuring this", plain)
	}
	if saved := plain - wrapped; saved < reqs*9/10 {
		t.Fatalf("wrapped saved %d writes over %d requests; want about one per request", saved, reqs)
	}
}
