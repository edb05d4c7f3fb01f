package proxy

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// TestHeadersUnderChurn serves small tiles (the bodies net/http holds
// until the handler returns), HEADs and 304s from a cache that holds
// only a few of them, to parallel clients over TCP, so that entries leave
// the cache while requests hold them and the requests' own releases free
// them. The cache poisons what it frees: a header value written after its
// entry's release reads '?'s. Every answer must carry its own tile's
// ETag, Content-Type and Content-Length.
func TestHeadersUnderChurn(t *testing.T) {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(t, func(c *config.Config) {
		c.Cache.MaxBytes = 4 << 10
		c.Cache.MaxObjectBytes = 1 << 10
	})
	f.p.log = discardLogger()
	f.p.access = nil
	const tiles = 12
	type tile struct{ path, etag, ctype, length string }
	var ts []tile
	for i := range tiles {
		body := []byte(fmt.Sprintf("tile %d %s", i, make([]byte, 100+i*37)))
		ctype := []string{"image/png", "image/webp", "application/x-protobuf"}[i%3]
		key := fmt.Sprintf("a/3/%d/%d.png", i, i)
		f.mem.Put("tiles", key, origintest.Object{Body: body, ContentType: ctype})
		ts = append(ts, tile{"/tiles/a/3/" + strconv.Itoa(i) + "/" + strconv.Itoa(i) + ".png", origintest.ETag(body), ctype, strconv.Itoa(len(body))})
	}
	base, _ := serveCoalesced(t, f.p)
	auth := "Bearer " + token(t, time.Hour, "a")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 300 {
				tl := ts[r.IntN(tiles)]
				req, _ := http.NewRequest([]string{"GET", "HEAD", "GET"}[r.IntN(3)], base+tl.path, nil)
				req.Header.Set("Authorization", auth)
				revalidate := req.Method == "GET" && r.IntN(2) == 0
				if revalidate {
					req.Header.Set("If-None-Match", tl.etag)
				}
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				got := fmt.Sprint(resp.StatusCode, resp.Header.Get("Etag"), resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"))
				want := fmt.Sprint(200, tl.etag, tl.ctype, tl.length)
				if revalidate {
					want = fmt.Sprint(304, tl.etag, "", "")
				}
				if got != want {
					errs <- fmt.Errorf("%s %s (If-None-Match %v): got %q, want %q", req.Method, tl.path, revalidate, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if f.cache.Len() >= tiles {
		t.Fatalf("%d of %d tiles cached: the test needs a cache that evicts", f.cache.Len(), tiles)
	}
}

// TestHitHeadersOutliveTheEntry: a hit's header values are the answer's
// own, not views of cache memory: read through a ResponseRecorder after
// the entry was evicted and its memory poisoned (PoisonFreed), they are
// still the tile's.
func TestHitHeadersOutliveTheEntry(t *testing.T) {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(t, nil)
	tok := token(t, time.Hour, "a")
	hdr := map[string]string{"Authorization": "Bearer " + tok}
	if w := f.do("GET", "/tiles/a/0/0/0.png", hdr); w.Code != 200 {
		t.Fatalf("miss: %d", w.Code)
	}
	w := f.do("GET", "/tiles/a/0/0/0.png", hdr)
	if w.Code != 200 || w.Header().Get("X-Cache") != "HIT" {
		t.Fatalf("hit: %d %s", w.Code, w.Header().Get("X-Cache"))
	}
	if n := f.cache.RemoveIf(func(string) bool { return true }); n != 1 {
		t.Fatalf("evicted %d entries, want 1", n)
	}
	want := map[string]string{"Content-Type": "image/png", "Content-Length": "9", "ETag": origintest.ETag([]byte("PNG-a-000")),
		"Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT"}
	for k, v := range want {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s after the entry's memory was freed: %q, want %q", k, got, v)
		}
	}
}
