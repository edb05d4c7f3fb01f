// Package coalesce provides a net.Listener whose connections send an
// HTTP response in as few write system calls as they can.
//
// net/http writes a response through a 4 KiB buffer: for a 20 KB tile
// that is one write of the headers and the first 4 KiB of body, then one
// of the rest. Each write is a system call, a TCP segment train and a
// wakeup of the client; on a cache hit they are most of the CPU a request
// costs. A connection from this package holds small writes back (up to
// Config.Hold bytes) and sends them together with the next write in one
// writev, as nginx sends a header and body. What it holds goes out at the
// latest when the server next touches a deadline or reads, which net/http
// does as soon as a response is finished, before waiting for the next
// request, so nothing waits on the client.
//
// A body that a handler copies in from a section of a file goes out with
// sendfile(2) behind what is held (see ReadFrom), so the kernel sends the
// file's pages instead of a copy of them.
//
// Held data is not pushed by http.Flusher; do not use these connections
// for responses that rely on Flush to reach the client early (server-sent
// events, long polls).
package coalesce

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Config sets how much a connection may hold back.
type Config struct {
	// Hold is the most bytes held back before they must be sent; writes
	// larger than what is left go out at once, with what is held, in one
	// writev. Zero means DefaultHold.
	Hold int
}

// DefaultHold is net/http's write buffer: a response that fits leaves in
// one write, and a larger one as that buffer plus the rest of the body in
// one writev. Holding more would copy body bytes the kernel copies anyway:
// with 16 KiB a 10 KB tile was copied twice, and hits cost more CPU
// (bench/results/history-to-2026-12-02.md has the figure).
const DefaultHold = 4 << 10

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Hold < 0 {
		return fmt.Errorf("coalesce: Hold %d must not be negative", c.Hold)
	}
	return nil
}

// Listener wraps accepted connections; see the package doc.
type Listener struct {
	net.Listener
	hold     int
	bufs     sync.Pool // *[]byte of cap hold, lent to a connection while it holds
	copyBufs sync.Pool // *[]byte of 32 KiB, for ReadFrom's copies
	// onSendfile, when set (by tests), is told of each section as its
	// sendfile starts: how else would a test know the copy was skipped.
	onSendfile func(n int64)
}

// NewListener wraps ln.
func NewListener(cfg Config, ln net.Listener) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hold := cfg.Hold
	if hold == 0 {
		hold = DefaultHold
	}
	l := &Listener{Listener: ln, hold: hold}
	l.bufs.New = func() any { b := make([]byte, 0, hold); return &b }
	l.copyBufs.New = func() any { b := make([]byte, 32<<10); return &b }
	return l, nil
}

// Accept returns the next connection, wrapped.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, l: l}, nil
}

// conn holds small writes back until the next write, read, deadline
// change or close. Reads and writes may come from different goroutines
// (net/http reads in the background while a handler writes), hence mu.
type conn struct {
	net.Conn
	l    *Listener
	mu   sync.Mutex // protects held, err and sf
	held *[]byte    // nil when nothing is held
	err  error      // the first write error; every later write fails with it
	sf   *sender    // made by the first sendFile
}

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil // nothing to hold, and no empty write to send later
	}
	var n0 int
	if c.held != nil {
		n0 = len(*c.held)
	}
	if n0+len(p) <= c.l.hold {
		if c.held == nil {
			c.held = c.l.bufs.Get().(*[]byte)
		}
		*c.held = append(*c.held, p...)
		return len(p), nil
	}
	if n0 == 0 {
		n, err := c.Conn.Write(p)
		c.err = err
		return n, err
	}
	bufs := net.Buffers{*c.held, p} // one writev on a TCP connection
	n, err := bufs.WriteTo(c.Conn)
	c.release()
	if err != nil {
		c.err = err
		return max(int(n)-n0, 0), err
	}
	return len(p), nil
}

// flushLocked sends what is held.
func (c *conn) flushLocked() error {
	if c.held == nil || c.err != nil {
		return c.err
	}
	_, c.err = c.Conn.Write(*c.held)
	c.release()
	return c.err
}

func (c *conn) release() {
	*c.held = (*c.held)[:0]
	c.l.bufs.Put(c.held)
	c.held = nil
}

func (c *conn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

// Read sends what is held first: a server that reads is waiting for the
// client, which may be waiting for that data.
func (c *conn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// The deadline setters flush before the deadline changes, so held data
// leaves under the deadline it was written under. net/http sets one as
// soon as a response is complete.

func (c *conn) SetDeadline(t time.Time) error {
	c.flush()
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.flush()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.flush()
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) Close() error {
	c.flush()
	c.mu.Lock()
	if c.held != nil { // the flush failed; give the buffer back anyway
		c.release()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite is what net/http uses to half-close after an error
// response; it must see the response first.
func (c *conn) CloseWrite() error {
	if err := c.flush(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
