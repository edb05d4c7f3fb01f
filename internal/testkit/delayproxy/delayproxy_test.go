package delayproxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echo is a TCP server that writes back what it reads.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// through starts a proxy of cfg and dials it; both close when the test
// ends.
func through(t *testing.T, cfg Config) net.Conn {
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBytesIntactBothWays: a megabyte goes out and comes back whole and
// in order through the proxy.
func TestBytesIntactBothWays(t *testing.T) {
	c := through(t, Config{Target: echo(t), Delay: time.Millisecond})
	want := make([]byte, 1<<20)
	rand.Read(want)
	go func() { c.Write(want); c.(*net.TCPConn).CloseWrite() }()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echoed %d bytes (%v), want the %d sent", len(got), err, len(want))
	}
}

// TestEveryChunkWaitsItsDelay: with a clock that stands still, each
// chunk each way is held for exactly the delay before it is written.
func TestEveryChunkWaitsItsDelay(t *testing.T) {
	const delay = 25 * time.Millisecond
	t0 := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	var waits []time.Duration
	c := through(t, Config{Target: echo(t), Delay: delay, Now: func() time.Time { return t0 },
		Sleep: func(d time.Duration) { mu.Lock(); waits = append(waits, d); mu.Unlock() }})
	buf := make([]byte, 5)
	for i := range 3 {
		c.Write([]byte("ping" + string(rune('0'+i))))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping"+string(rune('0'+i)) {
			t.Fatalf("round %d: %q %v", i, buf, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != 6 {
		t.Fatalf("%d waits for 3 round trips, want 6 (one each way): %v", len(waits), waits)
	}
	for _, w := range waits {
		if w != delay {
			t.Errorf("a chunk waited %v, want %v", w, delay)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{{}, {Target: "x:1", Delay: -1}} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
