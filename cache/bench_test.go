package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkGetHitParallel measures a fresh hit under contention: the
// lookup the proxy does for every hot tile.
func BenchmarkGetHitParallel(b *testing.B) {
	c, err := New(Config{MaxBytes: 64 << 20, MaxObjectBytes: 1 << 20, TTL: time.Hour, LoadTimeout: time.Second}, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, 1024)
	body := make([]byte, 20<<10)
	load := func(context.Context, string, *Entry) (*Entry, error) {
		return NewEntry(body, Meta{ContentType: "image/png", ETag: `"e"`}), nil
	}
	for i := range keys {
		keys[i] = fmt.Sprintf("tiles/city/%d/%d/%d.png", 10, i, i)
		c.Get(context.Background(), keys[i], load)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e, out, _ := c.Get(ctx, keys[i&1023], load)
			if out != Hit {
				b.Fatal("not a hit")
			}
			e.Release()
			i++
		}
	})
}

// BenchmarkGetHitRandom is hits spread at random over 8,192 entries of
// 20 KB each, as a map's traffic spreads over a tileset: each lookup
// touches memory no recent lookup did, so what it costs is cache misses
// (and, before hits shared a read lock, the LRU list writes).
func BenchmarkGetHitRandom(b *testing.B) {
	c, err := New(Config{MaxBytes: 1 << 30, MaxObjectBytes: 1 << 20, TTL: time.Hour, LoadTimeout: time.Second}, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	const n = 8192
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/tiles/demo/%d/%d/%d.png", 10, i, i)
		body := make([]byte, 20<<10)
		c.Get(context.Background(), keys[i], func(context.Context, string, *Entry) (*Entry, error) {
			return NewEntry(body, Meta{ContentType: "image/png", ETag: `"e"`, ContentLength: "20480"}), nil
		})
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			e, out, _ := c.Get(ctx, keys[r.IntN(n)], nil)
			if out != Hit || e.Meta().ContentLength != "20480" {
				b.Fatal("not a hit")
			}
			e.Release()
		}
	})
}

// BenchmarkGCMark is what one garbage collection costs with 20,000 tiles
// cached (four in five in the memory file), per entry. Every cycle visits
// what the heap holds per entry (golang-lru's list element and map slot;
// records, text and bodies are not scanned), and while it runs the
// requests in flight wait longer: on one core a cycle's mark phase lasts
// about twice its work (bench/README).
func BenchmarkGCMark(b *testing.B) {
	gcMark(b, 20000, func(i int) int {
		if i%5 == 0 {
			return 4 << 10
		}
		return 20 << 10
	})
}

// BenchmarkGCMark1M is one garbage collection with a million 4 KB tiles
// cached, the production size (#21): per entry, and the whole
// cycle. At this size every visit is a cache miss, so it costs more per
// entry than BenchmarkGCMark's 20,000. Filling takes a few seconds.
func BenchmarkGCMark1M(b *testing.B) {
	gcMark(b, 1_000_000, func(i int) int { return 3000 + i%2000 })
}

// gcMark fills a cache with n entries of size(i) bytes and times forced
// collections.
func gcMark(b *testing.B, n int, size func(i int) int) {
	c, err := New(Config{MaxBytes: 8 << 30, MaxObjectBytes: 1 << 20, TTL: time.Hour, LoadTimeout: time.Second}, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i := range n {
		// Header values from the origin arrive as strings of their own.
		body := make([]byte, size(i))
		meta := benchMeta(i, len(body))
		e, _, err := c.Get(context.Background(), fmt.Sprintf("bucket/tiles/demo/14/%d/%d.png", i, i), func(context.Context, string, *Entry) (*Entry, error) {
			return NewEntry(body, meta), nil
		})
		if err != nil {
			b.Fatal(err)
		}
		e.Release()
	}
	runtime.GC()
	b.ResetTimer()
	for range b.N {
		runtime.GC()
	}
	b.StopTimer() // not the Close
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/cycle")
	runtime.KeepAlive(c)
}

// benchMeta is metadata shaped as the tile core renders it: the header
// text in one string, each value a piece of it.
func benchMeta(i, size int) Meta {
	ct, etag, lm, cl := "image/png", fmt.Sprintf(`"%032x"`, i), time.Now().UTC().Format(time.RFC1123), fmt.Sprint(size)
	all := strings.Clone(ct + etag + lm + cl)
	a, b, c := len(ct), len(ct)+len(etag), len(ct)+len(etag)+len(lm)
	return Meta{ContentType: all[:a], ETag: all[a:b], LastModified: all[b:c], ContentLength: all[c:], Modified: time.Now()}
}
