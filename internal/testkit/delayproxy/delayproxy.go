// Package delayproxy is a TCP proxy on loopback that holds every byte for
// a fixed delay in each direction: real latency for benchmarks on a
// kernel without netem. A 25 ms delay each way makes a 50 ms round trip,
// for TLS handshakes and HTTP/2 frames alike (the proxy never looks
// inside the stream).
//
// Bytes are read as they come and released in order once their delay is
// up, so bandwidth is not limited, only latency added; each direction
// holds at most a bounded queue of chunks, and a full queue stops reading
// (TCP back-pressure) rather than growing.
package delayproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Config is one proxy.
type Config struct {
	// Listen is the proxy's address (127.0.0.1:0 picks a port).
	Listen string
	// Target is the address every connection is forwarded to.
	Target string
	// Delay is added to every byte, in each direction.
	Delay time.Duration
	// Now and Sleep are the clock; time.Now and time.Sleep when nil.
	Now   func() time.Time
	Sleep func(time.Duration)
}

// Validate reports a configuration that cannot run.
func (c *Config) Validate() error {
	switch {
	case c.Target == "":
		return errors.New("delayproxy: no target")
	case c.Delay < 0:
		return errors.New("delayproxy: negative delay")
	}
	return nil
}

// Proxy forwards connections with the delay; Close stops it and every
// connection it holds.
type Proxy struct {
	cfg   Config
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // protects conns
	conns map[net.Conn]struct{}
}

// chunk is bytes read at a time, released at due.
type chunk struct {
	b   []byte
	due time.Time
}

// queueLen bounds each direction's chunks in flight (at most 32 KiB each).
const queueLen = 256

// New listens and starts forwarding.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = time.Sleep
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	p := &Proxy{cfg: cfg, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for the
// goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: 5 * time.Second}
	server, err := d.DialContext(context.Background(), "tcp", p.cfg.Target)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(server, client) }()
	go func() { defer wg.Done(); p.pipe(client, server) }()
	wg.Wait()
	client.Close()
	server.Close()
	p.track(client, false)
	p.track(server, false)
}

// pipe copies src to dst with the delay, then half-closes dst so the
// other side sees the end.
func (p *Proxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, queueLen)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			if wait := c.due.Sub(p.cfg.Now()); wait > 0 {
				p.cfg.Sleep(wait)
			}
			if _, err := dst.Write(c.b); err != nil {
				for range q { // drain, so the reader is not stuck
				}
				return
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- chunk{b: append([]byte(nil), buf[:n]...), due: p.cfg.Now().Add(p.cfg.Delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(q)
	<-done
}
