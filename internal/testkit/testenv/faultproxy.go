package testenv

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is how a FaultProxy treats traffic.
type Fault int32

// Faults a FaultProxy can inject.
const (
	// Pass forwards everything.
	Pass Fault = iota
	// Reset closes every connection, open or new: the origin is down.
	Reset
	// Blackhole accepts and reads but never answers: a hung origin.
	Blackhole
	// Latency delays each request chunk by the proxy's latency.
	Latency
	// SlowBody forwards answers a few hundred bytes at a time.
	SlowBody
)

// FaultProxy is a TCP proxy to target whose behaviour a test switches at
// will, to put faults between tileproxy and MinIO.
type FaultProxy struct {
	target  string
	ln      net.Listener
	fault   atomic.Int32
	latency atomic.Int64 // ns, for Latency
	open    atomic.Int64 // client connections being served

	mu    sync.Mutex // protects conns
	conns map[net.Conn]struct{}
}

// NewFaultProxy listens on a loopback port and forwards to target
// (host:port). It stops when the test ends.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &FaultProxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	go f.serve()
	t.Cleanup(func() { ln.Close(); f.closeAll() })
	return f
}

// URL is the proxy's http:// base.
func (f *FaultProxy) URL() string { return "http://" + f.ln.Addr().String() }

// Set switches the fault; Reset also drops every open connection.
func (f *FaultProxy) Set(fault Fault, latency time.Duration) {
	f.latency.Store(int64(latency))
	f.fault.Store(int32(fault))
	if fault == Reset {
		f.closeAll()
	}
}

// Open is the number of client connections currently held open.
func (f *FaultProxy) Open() int64 { return f.open.Load() }

func (f *FaultProxy) track(c net.Conn, add bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
}

func (f *FaultProxy) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.conns {
		c.Close()
	}
}

func (f *FaultProxy) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if Fault(f.fault.Load()) == Reset {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, not FIN
			}
			c.Close()
			continue
		}
		go f.handle(c)
	}
}

func (f *FaultProxy) handle(c net.Conn) {
	f.open.Add(1)
	f.track(c, true)
	defer func() { f.track(c, false); c.Close(); f.open.Add(-1) }()
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		return
	}
	f.track(up, true)
	defer func() { f.track(up, false); up.Close() }()
	done := make(chan struct{}, 2)
	go func() { // client -> origin
		f.pump(up, c, true)
		done <- struct{}{}
	}()
	go func() { // origin -> client
		f.pump(c, up, false)
		done <- struct{}{}
	}()
	<-done // either side closing ends the pair
}

func (f *FaultProxy) pump(dst io.Writer, src io.Reader, request bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			switch Fault(f.fault.Load()) {
			case Reset:
				return
			case Blackhole:
				if !request {
					continue // swallow every answer
				}
			case Latency:
				if request {
					time.Sleep(time.Duration(f.latency.Load()))
				}
			case SlowBody:
				if !request {
					for off := 0; off < n; off += 512 {
						end := min(off+512, n)
						if _, werr := dst.Write(buf[off:end]); werr != nil {
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
					continue
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
