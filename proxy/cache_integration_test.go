package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

// spy counts and records what reaches the real S3 fetcher.
type spy struct {
	next  origin.Fetcher
	calls atomic.Int64
	mu    sync.Mutex // protects log
	log   []spyCall
}

type spyCall struct {
	req origin.Request
	err error
}

func (s *spy) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	s.calls.Add(1)
	obj, err := s.next.Get(ctx, req)
	s.mu.Lock()
	s.log = append(s.log, spyCall{req, err})
	s.mu.Unlock()
	return obj, err
}

func (s *spy) snapshot() []spyCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]spyCall(nil), s.log...)
}

func cacheCfg(ttl, stale time.Duration) *config.Cache {
	c := config.Default().Cache
	c.TTL = config.Duration(ttl)
	c.StaleIfError = config.Duration(stale)
	return &c
}

func TestCacheOnMinIO(t *testing.T) {
	// The cache's clock moves only when the test moves it.
	const ttl = time.Minute
	clk := testenv.NewClock(time.Now())
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	env.Put(t, bucket, map[string]testenv.Object{
		"a/0/0/0.png": {Body: []byte("tile a v1"), ContentType: "image/png"},
		"b/0/0/0.png": {Body: []byte("tile of b"), ContentType: "image/png"},
	})
	sp := &spy{}
	st := newStack(t, env.Endpoint, env.AccessKey, env.SecretKey,
		[]config.Tileset{{Name: "a", Bucket: bucket, Prefix: "a/"}, {Name: "b", Bucket: bucket, Prefix: "b/"}},
		stackOpts{cache: cacheCfg(ttl, time.Hour), now: clk.Now, wrap: func(f origin.Fetcher) origin.Fetcher { sp.next = f; return sp }})
	url := st.srv.URL + "/tiles/a/0/0/0.png"
	bearerA := map[string]string{"Authorization": "Bearer " + hmacToken(t, time.Hour, "a")}

	t.Run("200 concurrent cold requests make one GetObject", func(t *testing.T) {
		var wg sync.WaitGroup
		var bad atomic.Int64
		for range 200 {
			wg.Go(func() {
				resp, body, err := try("GET", url, bearerA)
				if err != nil || resp.StatusCode != 200 || string(body) != "tile a v1" {
					bad.Add(1)
				}
			})
		}
		wg.Wait()
		if bad.Load() != 0 {
			t.Errorf("%d requests failed", bad.Load())
		}
		if n := sp.calls.Load(); n != 1 {
			t.Fatalf("GetObject calls: got %d, want 1", n)
		}
	})
	t.Run("revalidation sends If-None-Match and MinIO answers 304", func(t *testing.T) {
		clk.Add(ttl + time.Second)
		resp, body := get(t, url, bearerA)
		if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "HIT" || string(body) != "tile a v1" {
			t.Fatalf("got %d %s %q", resp.StatusCode, resp.Header.Get("X-Cache"), body)
		}
		calls := sp.snapshot()
		last := calls[len(calls)-1]
		if last.req.IfNoneMatch == "" || !errors.Is(last.err, origin.ErrNotModified) {
			t.Fatalf("last origin call: If-None-Match %q, err %v; want a 304", last.req.IfNoneMatch, last.err)
		}
	})
	t.Run("a replaced object is seen after ttl", func(t *testing.T) {
		env.Put(t, bucket, map[string]testenv.Object{"a/0/0/0.png": {Body: []byte("tile a v2"), ContentType: "image/png"}})
		if _, body := get(t, url, bearerA); string(body) != "tile a v1" {
			t.Fatalf("within ttl: %q, want the cached v1", body)
		}
		clk.Add(ttl + time.Second)
		resp, body := get(t, url, bearerA)
		if string(body) != "tile a v2" || resp.Header.Get("X-Cache") != "MISS" {
			t.Fatalf("after ttl: %q %s, want v2 MISS", body, resp.Header.Get("X-Cache"))
		}
	})
	t.Run("isolation: a cached tile of b never reaches a token for a", func(t *testing.T) {
		urlB := st.srv.URL + "/tiles/b/0/0/0.png"
		if resp, _ := get(t, urlB, map[string]string{"Authorization": "Bearer " + hmacToken(t, time.Hour, "b")}); resp.StatusCode != 200 {
			t.Fatalf("b loads b: %d", resp.StatusCode)
		}
		for _, target := range []string{"/tiles/b/0/0/0.png", "/tiles/a/../b/0/0/0.png", "/tiles/a/%2e%2e/b/0/0/0.png", "/tiles/a/..%2fb/0/0/0.png"} {
			if code := raw(t, st.srv, target, hmacToken(t, time.Hour, "a")); code != 403 && code != 400 {
				t.Errorf("%s with a's token: got %d", target, code)
			}
		}
		if resp, _ := get(t, urlB+"?access_token="+hmacToken(t, time.Hour, "a"), nil); resp.StatusCode != 403 {
			t.Errorf("query token for a on b: %d", resp.StatusCode)
		}
		if resp, _ := get(t, urlB, map[string]string{"Cookie": auth.SecureCookieName + "=" + hmacToken(t, time.Hour, "a")}); resp.StatusCode != 403 {
			t.Errorf("cookie for a on b: %d", resp.StatusCode)
		}
	})
}

func TestLargeObjectStreamsWithRange(t *testing.T) {
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	big := make([]byte, 6<<20)
	rand.Read(big)
	env.Put(t, bucket, map[string]testenv.Object{"a/big.bin": {Body: big}})
	sp := &spy{}
	st := newStack(t, env.Endpoint, env.AccessKey, env.SecretKey,
		[]config.Tileset{{Name: "a", Bucket: bucket, Prefix: "a/"}},
		stackOpts{cache: cacheCfg(time.Minute, time.Hour), wrap: func(f origin.Fetcher) origin.Fetcher { sp.next = f; return sp }})
	auth := "Bearer " + hmacToken(t, time.Hour, "a")
	resp, body := get(t, st.srv.URL+"/tiles/a/big.bin", map[string]string{"Authorization": auth, "Range": "bytes=1000-1999"})
	if resp.StatusCode != 206 || !bytes.Equal(body, big[1000:2000]) || resp.Header.Get("Content-Range") != "bytes 1000-1999/6291456" {
		t.Fatalf("range: %d %d bytes %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
	}
	var sawRange bool
	for _, c := range sp.snapshot() {
		sawRange = sawRange || c.req.Range == "bytes=1000-1999"
	}
	if !sawRange {
		t.Error("Range was not passed to S3")
	}
	resp, body = get(t, st.srv.URL+"/tiles/a/big.bin", map[string]string{"Authorization": auth})
	if resp.StatusCode != 200 || !bytes.Equal(body, big) || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("full: %d %d bytes %s", resp.StatusCode, len(body), resp.Header.Get("X-Cache"))
	}
	if b := st.cache.Bytes(); b > 4096 {
		t.Errorf("cache holds %d bytes: the 6 MiB object was cached", b)
	}
}

func TestStaleWhenMinIOStops(t *testing.T) {
	p := testenv.StartMinIO(t)
	env := p.S3()
	bucket := env.Bucket(t)
	env.Put(t, bucket, map[string]testenv.Object{"a/0/0/0.png": {Body: []byte("last good"), ContentType: "image/png"}})
	const ttl, stale = time.Minute, time.Hour
	clk := testenv.NewClock(time.Now())
	st := newStack(t, p.Endpoint, p.AccessKey, p.SecretKey,
		[]config.Tileset{{Name: "a", Bucket: bucket, Prefix: "a/"}}, stackOpts{cache: cacheCfg(ttl, stale), now: clk.Now})
	url := st.srv.URL + "/tiles/a/0/0/0.png"
	bearer := map[string]string{"Authorization": "Bearer " + hmacToken(t, time.Hour, "a")}
	if resp, _ := get(t, url, bearer); resp.StatusCode != 200 {
		t.Fatalf("before: %d", resp.StatusCode)
	}
	p.Stop()
	clk.Add(ttl + time.Second)
	resp, body := get(t, url, bearer)
	if resp.StatusCode != 200 || resp.Header.Get("X-Cache") != "STALE" || string(body) != "last good" {
		t.Fatalf("inside stale window: %d %s %q", resp.StatusCode, resp.Header.Get("X-Cache"), body)
	}
	clk.Add(stale)
	if resp, _ := get(t, url, bearer); resp.StatusCode != 502 {
		t.Fatalf("after stale window: %d, want 502", resp.StatusCode)
	}
}
