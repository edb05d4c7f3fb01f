package proxy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/memlimit"
	"github.com/tileproxy/tileproxy/internal/testkit/synth"
	"github.com/tileproxy/tileproxy/origin"
)

// BenchmarkCacheSize is hits at random over N cached tiles of 4 KB on
// average, through the whole handler (token, grant, cache, headers,
// body) and, in the same round, through a bare handler holding the same
// tiles in a map. It reports per request the latency percentiles and,
// per run, GC cycles and GC CPU, heap and off-heap bytes per cached
// byte, and the process's memory; for tileproxy also the fill (misses
// from an in-process origin, where tileproxy is the limit): misses/s and
// CPU per miss.
//
//	go test ./proxy -run '^$' -bench CacheSize -benchtime 200000x
//	TILEPROXY_BENCH_ENTRIES=10000,1000000 go test ./proxy -run '^$' -bench CacheSize -benchtime 200000x
//
// bench/size.sh runs it and pairs the rounds. Variants: "tileproxy" has
// max_bytes just over what the tiles take (a full cache), "third" three
// times that, to show memory follows what is cached, not what is allowed.
func BenchmarkCacheSize(b *testing.B) {
	sizes := []int{10_000, 100_000, 1_000_000}
	if env := os.Getenv("TILEPROXY_BENCH_ENTRIES"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("TILEPROXY_BENCH_ENTRIES: %q", env)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		set := synth.Set{N: n, Size: 4096}
		for _, kind := range []string{"bare", "tileproxy", "third"} {
			var st *sizeState
			b.Run(fmt.Sprintf("entries=%d/%s", n, kind), func(b *testing.B) {
				if st == nil {
					st = newSizeState(b, set, kind)
				}
				st.run(b)
			})
			if st != nil {
				st.close()
			}
		}
	}
}

// sizeState is one handler with its tiles, kept across the calls the
// testing package makes with growing b.N.
type sizeState struct {
	set   synth.Set
	h     http.Handler
	paths []string // a pool of random tile paths, shared by all runs
	tok   string
	// measured once, after filling: heap and off-heap bytes, and what
	// the process takes (RSS plus the memory file).
	heap, offHeap, mem, maxBytes int64
	cached                       int64 // the tiles' bytes
	file                         func() int64
	fill                         string // fill metrics, for tileproxy
	close                        func()
}

const sizeTileset = "/tiles/synth/"

func newSizeState(b *testing.B, set synth.Set, kind string) *sizeState {
	st := &sizeState{set: set, close: func() {}}
	r := rand.New(rand.NewPCG(uint64(set.N), 7))
	for range 1 << 16 {
		st.paths = append(st.paths, sizeTileset+synth.Path(r.IntN(set.N)))
	}
	for i := range set.N {
		st.cached += int64(set.Len(i))
	}
	tileBytes := st.cached
	if kind == "bare" {
		st.h = set.Bare(sizeTileset)
	} else {
		// max_bytes: what the tiles take in the cache (class-rounded text
		// and body, and the entry overhead), with room to spare.
		maxBytes := (tileBytes + int64(set.N)*1024) * 11 / 10
		if kind == "third" {
			maxBytes *= 3
		}
		st.maxBytes = maxBytes
		f := synthFixture(b, maxBytes, &synth.Origin{Set: set})
		// The process policy tileproxy serve sets (cmd/tileproxy).
		lim, _ := memlimit.Set(maxBytes)
		st.tok = token(b, time.Hour, "synth")
		st.h = f.p
		st.fill = st.fillCache(b, f, lim)
		st.close = func() {
			f.cache.Close()
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
		}
		st.offHeap = f.cache.OffHeapBytes()
		st.file = memfdBytes
	}
	runtime.GC()
	st.heap = int64(readMetrics("/gc/heap/live:bytes")[0])
	st.mem = st.memory()
	b.Logf("%s, %d tiles (%d MiB): live heap %d MiB, off heap %d MiB, RSS+file %d MiB", kind, set.N, tileBytes>>20, st.heap>>20, st.offHeap>>20, st.mem>>20)
	return st
}

// fillCache asks for every tile once, from 4 clients, and returns the
// miss metrics: misses per second and CPU per miss, all of it
// tileproxy's but for making the body.
func (st *sizeState) fillCache(b *testing.B, f *fixture, lim *memlimit.Limit) string {
	u0, t0 := cpuTime(), time.Now()
	var wg sync.WaitGroup
	next := make(chan int, 1024)
	for range 4 {
		wg.Go(func() {
			w := &nopWriter{h: http.Header{}}
			req := st.request()
			for i := range next {
				st.set.Body(i) // what the origin spends, subtracted below
				p := sizeTileset + synth.Path(i)
				req.URL.Path, req.RequestURI = p, p
				clear(w.h)
				st.h.ServeHTTP(w, req)
			}
		})
	}
	for i := range st.set.N {
		next <- i
	}
	close(next)
	wg.Wait()
	wall, cpu := time.Since(t0), cpuTime()-u0
	lim.Follow(f.cache.OffHeapBytes())
	if f.cache.Len() != st.set.N {
		b.Fatalf("filled %d of %d tiles", f.cache.Len(), st.set.N)
	}
	// The body is made twice per miss above (once here, once by the
	// origin), so one making is subtracted: what is left is tileproxy's.
	t1 := cpuTime()
	for i := range min(st.set.N, 20000) {
		st.set.Body(i)
	}
	body := (cpuTime() - t1) / time.Duration(min(st.set.N, 20000))
	perMiss := cpu/time.Duration(st.set.N) - 2*body
	return fmt.Sprintf("%.0f misses/s, %.1f µs CPU per miss", float64(st.set.N)/wall.Seconds(), float64(perMiss.Nanoseconds())/1000)
}

// synthFixture is the proxy with a cache of maxBytes, the access line off,
// and one tileset "synth" of synthetic tiles (internal/testkit/synth) from o.
func synthFixture(b *testing.B, maxBytes int64, o origin.Fetcher) *fixture {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(b, func(c *config.Config) {
		c.Cache.MaxBytes = config.ByteSize(maxBytes)
		c.Cache.MaxObjectBytes = 1 << 20
		c.Log.Access = false
		c.Tilesets = []config.Tileset{{Name: "synth", Bucket: "synth", Prefix: synth.Prefix, Format: "pbf",
			CacheControl: "private, max-age=3600", Missing: config.MissingNotFound, MaxZoom: 14, Bounds: []float64{-180, -85, 180, 85}}}
	})
	f.p.log = discardLogger()
	f.p.access = nil
	f.setFetcher(o)
	return f
}

func (st *sizeState) request() *http.Request {
	req := &http.Request{Method: "GET", URL: &url.URL{}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: "tiles.example",
		Header: http.Header{"Authorization": {"Bearer " + st.tok}}, RemoteAddr: "127.0.0.1:1234"}
	return req.WithContext(req.Context())
}

// run serves b.N hits from 4 goroutines (the machine's cores, twice).
func (st *sizeState) run(b *testing.B) {
	const workers = 4
	per := b.N/workers + 1
	lat := make([][]time.Duration, workers)
	runtime.GC()
	m0 := readMetrics("/gc/cycles/total:gc-cycles", "/cpu/classes/gc/total:cpu-seconds")
	c0, t0 := cpuTime(), time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			w := &nopWriter{h: http.Header{}}
			req := st.request()
			r := rand.New(rand.NewPCG(uint64(g), uint64(b.N)))
			d := make([]time.Duration, 0, per)
			for range per {
				p := st.paths[r.IntN(len(st.paths))]
				req.URL.Path, req.RequestURI = p, p
				clear(w.h)
				s := time.Now()
				st.h.ServeHTTP(w, req)
				d = append(d, time.Since(s))
			}
			lat[g] = d
		})
	}
	wg.Wait()
	b.StopTimer()
	wall, cpu := time.Since(t0), cpuTime()-c0
	m1 := readMetrics("/gc/cycles/total:gc-cycles", "/cpu/classes/gc/total:cpu-seconds")
	st.mem = max(st.mem, st.memory()) // the heap grows under load
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/wall.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric((m1[0]-m0[0])/wall.Seconds(), "gc/s")
	b.ReportMetric(100*(m1[1]-m0[1])/cpu.Seconds(), "gc-cpu-%")
	b.ReportMetric(float64(st.heap)/float64(st.cached), "heap-B/B")
	b.ReportMetric(float64(st.offHeap)/float64(st.cached), "offheap-B/B")
	b.ReportMetric(float64(st.mem)/(1<<20), "mem-MiB")
	if st.maxBytes > 0 {
		b.ReportMetric(float64(st.mem)/float64(st.maxBytes*13/10+50<<20), "mem/bound")
	}
	if st.fill != "" && b.N > 1 {
		b.Log(st.fill)
	}
}

// memory is what the process takes: RSS, and the memory file, whose
// pages are not mapped.
func (st *sizeState) memory() int64 {
	m := rss()
	if st.file != nil {
		m += st.file()
	}
	return m
}

// memfdBytes is the memory the cache's memory file takes, as the kernel
// counts it (the file's blocks; /proc/PID/fd shows it as
// /memfd:tileproxy-cache), or 0 without one.
func memfdBytes() int64 {
	fds, _ := os.ReadDir("/proc/self/fd")
	var n int64
	for _, fd := range fds {
		p := "/proc/self/fd/" + fd.Name()
		if l, err := os.Readlink(p); err != nil || !strings.HasPrefix(l, "/memfd:tileproxy-cache") {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil {
			n += st.Blocks * 512
		}
	}
	return n
}

func readMetrics(names ...string) []float64 {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	v := make([]float64, len(s))
	for i := range s {
		switch s[i].Value.Kind() {
		case metrics.KindUint64:
			v[i] = float64(s[i].Value.Uint64())
		case metrics.KindFloat64:
			v[i] = s[i].Value.Float64()
		}
	}
	return v
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss is the process's resident memory (the arena's pages included; the
// memory file's are not, being unmapped).
func rss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
