package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

// blockingFetcher holds every request until release is closed, and
// reports when each body is closed.
type blockingFetcher struct {
	entered chan struct{}
	release chan struct{}
	closed  atomic.Int64
	body    func() io.Reader
}

func (b *blockingFetcher) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := b.body()
	return &origin.Object{Body: &closeCounter{Reader: r, n: &b.closed}, Size: -1, ContentType: "image/png"}, nil
}

type closeCounter struct {
	io.Reader
	n *atomic.Int64
}

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

func TestMaxInFlight(t *testing.T) {
	bf := &blockingFetcher{entered: make(chan struct{}, 10), release: make(chan struct{}), body: func() io.Reader { return strings.NewReader("tile") }}
	f := newFixture(t, func(c *config.Config) { c.S3.MaxInFlight = 1 })
	f.setFetcher(bf)
	a := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")}
	first := make(chan int, 1)
	go func() { first <- f.do("GET", "/tiles/a/0/0/0.png", a).Code }()
	<-bf.entered
	w := f.do("GET", "/tiles/a/1/0/0.png", a)
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Body.String() != "origin busy\n" {
		t.Fatalf("second request while saturated: %d %q %q", w.Code, w.Header().Get("Retry-After"), w.Body.String())
	}
	close(bf.release)
	if code := <-first; code != 200 {
		t.Fatalf("first request: %d", code)
	}
	if n := f.inFlight(t); n != 0 {
		t.Fatalf("%d slots still taken after the body was closed", n)
	}
	go func() { <-bf.entered }()
	if w := f.do("GET", "/tiles/a/1/0/0.png", a); w.Code != 200 {
		t.Fatalf("after release: %d", w.Code)
	}
}

// endless is a body that never ends, for a client that leaves mid-body.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestClientLeavesMidBody(t *testing.T) {
	bf := &blockingFetcher{entered: make(chan struct{}, 10), release: make(chan struct{}), body: func() io.Reader { return endless{} }}
	close(bf.release)
	f := newFixture(t, nil) // no cache: the body streams straight through
	f.setFetcher(bf)
	srv := httptest.NewServer(f.p)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/tiles/a/big.bin", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, time.Hour, "a"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-bf.entered
	io.CopyN(io.Discard, resp.Body, 256<<10)
	resp.Body.Close() // the client goes away mid-body
	deadline := time.Now().Add(10 * time.Second)
	for bf.closed.Load() == 0 || f.inFlight(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("origin body closed %d times, %d slots taken: the stream did not stop", bf.closed.Load(), f.inFlight(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientLeavesMidFetch(t *testing.T) {
	// No cache: the client's own context cancels its own origin request.
	bf := &blockingFetcher{entered: make(chan struct{}, 10), release: make(chan struct{}), body: func() io.Reader { return strings.NewReader("x") }}
	f := newFixture(t, nil)
	f.setFetcher(bf)
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("GET", "/tiles/a/0/0/0.png", nil).WithContext(ctx)
	r.Header.Set("Authorization", "Bearer "+token(t, time.Hour, "a"))
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { f.p.ServeHTTP(w, r); close(done) }()
	<-bf.entered
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("handler kept waiting for a client that left")
	}
	if f.inFlight(t) != 0 {
		t.Error("slot not released after cancellation")
	}
}
