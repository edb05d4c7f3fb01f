package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/cache/internal/arena"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

func newCache(t *testing.T, cfg Config, deps Deps) (*Cache, *testenv.Clock) {
	t.Helper()
	clk := testenv.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	if deps.Now == nil {
		deps.Now = clk.Now
	}
	if cfg.LoadTimeout == 0 {
		cfg.LoadTimeout = 5 * time.Second
	}
	c, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

var defCfg = Config{MaxBytes: 1 << 20, MaxObjectBytes: 64 << 10, TTL: time.Minute, NegativeTTL: 30 * time.Second, StaleIfError: time.Hour}

// origin is a LoadFunc over a mutable object, counting loads.
type origin struct {
	mu    sync.Mutex // protects body, etag, err
	body  string
	etag  string
	err   error
	loads atomic.Int64
	revs  atomic.Int64 // loads that were revalidations
}

func (o *origin) load(ctx context.Context, _ string, prev *Entry) (*Entry, error) {
	o.loads.Add(1)
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev != nil {
		o.revs.Add(1)
	}
	if o.err != nil {
		return nil, o.err
	}
	if prev != nil && prev.Meta().ETag == o.etag {
		return nil, fmt.Errorf("origin said 304: %w", ErrNotModified)
	}
	return NewEntry([]byte(o.body), Meta{ContentType: "image/png", ETag: o.etag}), nil
}

func (o *origin) set(body, etag string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.body, o.etag, o.err = body, etag, err
}

func TestEvictionByBytes(t *testing.T) {
	var evictions atomic.Int64
	var maxSeen atomic.Int64
	cfg := Config{MaxBytes: 20 << 10, MaxObjectBytes: 4 << 10, TTL: time.Hour, LoadTimeout: time.Second}
	c, _ := newCache(t, cfg, Deps{
		OnEvict: func() { evictions.Add(1) },
		OnChange: func(b, _ int64) {
			if b > maxSeen.Load() {
				maxSeen.Store(b)
			}
		},
	})
	body := strings.Repeat("x", 1000)
	for i := range 100 {
		key := fmt.Sprint("k", i)
		_, _, err := c.Get(t.Context(), key, func(context.Context, string, *Entry) (*Entry, error) {
			return NewEntry([]byte(body), Meta{ContentType: "image/png", ETag: `"e"`}), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if b := c.Bytes(); b > cfg.MaxBytes {
			t.Fatalf("after %d adds: %d bytes > max %d", i+1, b, cfg.MaxBytes)
		}
	}
	if maxSeen.Load() > cfg.MaxBytes {
		t.Errorf("reported %d bytes, over max", maxSeen.Load())
	}
	per := int64(entryOverhead + arena.ClassSize(1000+len("image/png")+len(`"e"`)+len("k99")))
	if want := int(cfg.MaxBytes / per); c.Len() != want {
		t.Errorf("entries: got %d, want %d", c.Len(), want)
	}
	if got := evictions.Load(); got != int64(100-c.Len()) {
		t.Errorf("evictions: got %d, want %d", got, 100-c.Len())
	}
	// LRU: the newest are in, the oldest out.
	if _, ok := c.lookup("k99", time.Now()); !ok {
		t.Error("newest entry evicted")
	}
	if _, ok := c.lookup("k0", time.Now()); ok {
		t.Error("oldest entry kept")
	}
}

// TestOverheadCounted: entries without a body (remembered misses) take
// no more heap than they count against max_bytes, so a flood of distinct
// missing tiles stays inside the bound, with short keys and long.
func TestOverheadCounted(t *testing.T) {
	for _, pad := range []int{0, 300} {
		cfg := defCfg
		cfg.MaxBytes = 1 << 40
		c, _ := newCache(t, cfg, Deps{})
		missing := func(context.Context, string, *Entry) (*Entry, error) { return nil, ErrNotFound }
		long := strings.Repeat("k", pad)
		const n = 20000
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range n {
			c.Get(t.Context(), fmt.Sprintf("tiles-bucket/tilesets/demo%s/%d/%d/%d.png", long, i%20, i, i*7), missing)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		if c.Len() != n {
			t.Fatalf("%d entries, want %d", c.Len(), n)
		}
		heap := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / n
		t.Logf("key of %d+ bytes: %d bytes of heap per entry, %d counted", pad, heap, c.Bytes()/n)
		if heap > c.Bytes()/n {
			t.Errorf("key of %d+ bytes: an entry takes %d bytes of heap but counts %d", pad, heap, c.Bytes()/n)
		}
		runtime.KeepAlive(c)
	}
}

func TestOversizeNotCached(t *testing.T) {
	c, _ := newCache(t, defCfg, Deps{})
	big := strings.Repeat("b", int(defCfg.MaxObjectBytes)+1)
	o := &origin{body: big, etag: `"big"`}
	e, out, err := c.Get(t.Context(), "big", o.load)
	if err != nil || out != Miss || len(text(e)) != len(big) {
		t.Fatalf("first: %v %v", out, err)
	}
	e, out, err = c.Get(t.Context(), "big", o.load)
	if err != nil || !e.Large() || out != Hit || o.loads.Load() != 1 {
		t.Fatalf("second: large=%v %v %v loads=%d", e.Large(), out, err, o.loads.Load())
	}
	if c.Bytes() > int64(entryOverhead+arena.ClassSize(len("big"))) {
		t.Errorf("oversize body counted: %d bytes", c.Bytes())
	}
}

func TestTTLAndRevalidation(t *testing.T) {
	c, clk := newCache(t, defCfg, Deps{})
	o := &origin{body: "v1", etag: `"1"`}
	get := func() (Entry, Outcome) {
		t.Helper()
		e, out, err := c.Get(t.Context(), "k", o.load)
		if err != nil {
			t.Fatal(err)
		}
		return e, out
	}
	if e, out := get(); out != Miss || text(e) != "v1" {
		t.Fatalf("first: %v", out)
	}
	clk.Add(59 * time.Second)
	if _, out := get(); out != Hit || o.loads.Load() != 1 {
		t.Fatalf("within ttl: %v, %d loads", out, o.loads.Load())
	}
	clk.Add(2 * time.Second) // past ttl, unchanged at origin: 304
	if e, out := get(); out != Hit || text(e) != "v1" || o.revs.Load() != 1 {
		t.Fatalf("revalidated: %v, revs %d", out, o.revs.Load())
	}
	clk.Add(30 * time.Second) // the 304 restarted the ttl
	if _, out := get(); out != Hit || o.loads.Load() != 2 {
		t.Fatalf("after 304, fresh again: %v, %d loads", out, o.loads.Load())
	}
	o.set("v2", `"2"`, nil)
	clk.Add(31 * time.Second) // past ttl, changed at origin: 200 replaces
	if e, out := get(); out != Miss || text(e) != "v2" {
		t.Fatalf("replaced: %v %q", out, text(e))
	}
}

func TestNegative(t *testing.T) {
	c, clk := newCache(t, defCfg, Deps{})
	o := &origin{err: fmt.Errorf("404 from S3: %w", ErrNotFound)}
	for i, want := range []Outcome{Miss, Negative, Negative} {
		_, out, err := c.Get(t.Context(), "hole", o.load)
		if !errors.Is(err, ErrNotFound) || out != want {
			t.Fatalf("get %d: %v %v, want %v ErrNotFound", i, out, err, want)
		}
	}
	if o.loads.Load() != 1 {
		t.Errorf("loads: %d", o.loads.Load())
	}
	clk.Add(31 * time.Second)
	o.set("now here", `"n"`, nil)
	if e, out, err := c.Get(t.Context(), "hole", o.load); err != nil || out != Miss || text(e) != "now here" {
		t.Fatalf("after negative ttl: %v %v", out, err)
	}
}

func TestStaleIfError(t *testing.T) {
	c, clk := newCache(t, defCfg, Deps{})
	o := &origin{body: "good", etag: `"g"`}
	c.Get(t.Context(), "k", o.load)
	o.set("", "", errors.New("S3 down"))
	clk.Add(defCfg.TTL + time.Minute)
	e, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Stale || text(e) != "good" {
		t.Fatalf("within stale window: %v %v", out, err)
	}
	clk.Add(defCfg.StaleIfError)
	if _, _, err := c.Get(t.Context(), "k", o.load); err == nil || err.Error() != "S3 down" {
		t.Fatalf("past stale window: got %v, want the origin error", err)
	}
	// A miss with the origin down is the origin's error.
	if _, _, err := c.Get(t.Context(), "never", o.load); err == nil {
		t.Fatal("miss with origin down succeeded")
	}
}

// countingFlight counts callers that reached the flight.
type countingFlight struct {
	g       singleflight.Group
	callers atomic.Int64
}

func (f *countingFlight) DoChan(key string, fn func() (any, error)) <-chan singleflight.Result {
	ch := f.g.DoChan(key, fn)
	f.callers.Add(1)
	return ch
}

func TestSingleflight(t *testing.T) {
	flight := &countingFlight{}
	c, _ := newCache(t, defCfg, Deps{Flight: flight})
	release := make(chan struct{})
	var loads atomic.Int64
	load := func(ctx context.Context, _ string, _ *Entry) (*Entry, error) {
		loads.Add(1)
		<-release
		return NewEntry([]byte("tile"), Meta{ContentType: "image/png", ETag: `"t"`}), nil
	}
	const n = 20000
	var wg sync.WaitGroup
	results := make(chan Outcome, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, out, err := c.Get(context.Background(), "k", load)
			if err != nil || text(e) != "tile" {
				t.Errorf("waiter: %v", err)
			}
			results <- out
		}()
	}
	// A waiter whose client leaves stops waiting at once.
	gone, cancel := context.WithCancel(context.Background())
	goneErr := make(chan error, 1)
	go func() {
		_, _, err := c.Get(gone, "k", load)
		goneErr <- err
	}()
	for flight.callers.Load() < n+1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("departed waiter: got %v", err)
	}
	close(release) // the shared load was not cancelled with it
	wg.Wait()
	close(results)
	if loads.Load() != 1 {
		t.Fatalf("%d concurrent misses made %d loads, want 1", n+1, loads.Load())
	}
	for out := range results {
		if out != Miss {
			t.Errorf("waiter outcome %v, want miss (shared)", out)
		}
	}
	if _, out, _ := c.Get(context.Background(), "k", load); out != Hit {
		t.Errorf("after the flight: %v, want hit", out)
	}
}

func TestFirstCallerLeavingDoesNotCancelLoad(t *testing.T) {
	c, _ := newCache(t, defCfg, Deps{})
	started := make(chan struct{})
	release := make(chan struct{})
	var loadErr atomic.Value
	load := func(ctx context.Context, _ string, _ *Entry) (*Entry, error) {
		close(started)
		<-release
		if err := ctx.Err(); err != nil {
			loadErr.Store(err)
			return nil, err
		}
		return NewEntry([]byte("tile"), Meta{ETag: `"t"`}), nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Get(ctx, "k", load); close(done) }()
	<-started
	cancel()
	<-done
	close(release)
	for c.Len() == 0 && loadErr.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	if err := loadErr.Load(); err != nil {
		t.Fatalf("shared load saw the first caller's cancellation: %v", err)
	}
}

// flightThatFillsFirst simulates a flight finishing just before ours
// starts: by the time fn runs, the key is already fresh in the cache.
type flightThatFillsFirst struct {
	g    singleflight.Group
	fill func()
}

func (f *flightThatFillsFirst) DoChan(key string, fn func() (any, error)) <-chan singleflight.Result {
	f.fill()
	return f.g.DoChan(key, fn)
}

func TestLooksAgainInsideFlight(t *testing.T) {
	f := &flightThatFillsFirst{}
	c, clk := newCache(t, defCfg, Deps{Flight: f})
	f.fill = func() {
		c.keep("k", NewEntry([]byte("filled"), Meta{ETag: `"f"`}), clk.Now(), c.st.removed.Load())
	}
	var loads atomic.Int64
	e, out, err := c.Get(t.Context(), "k", func(context.Context, string, *Entry) (*Entry, error) {
		loads.Add(1)
		return NewEntry([]byte("loaded"), Meta{ETag: `"l"`}), nil
	})
	if err != nil || loads.Load() != 0 || text(e) != "filled" || out != Hit {
		t.Fatalf("got %q %v %v with %d loads, want the filled entry and no load", text(e), out, err, loads.Load())
	}
}

func TestValidate(t *testing.T) {
	if _, err := New(Config{MaxBytes: 10, MaxObjectBytes: 20, LoadTimeout: time.Second}, Deps{}); err == nil {
		t.Error("max_object_bytes > max_bytes accepted")
	}
	if _, err := New(Config{MaxBytes: 10, MaxObjectBytes: 5}, Deps{}); err == nil {
		t.Error("zero load timeout accepted")
	}
}

// TestRecency checks LRU order: exact in a small cache; in a large one a
// hit moves an entry to the front at most once per moveEvery.
func TestRecency(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries int
		wait    time.Duration // between filling and the hit on the oldest
		kept    bool          // the oldest survives the next eviction
	}{
		{"small cache, hit at once", exactBelow - 1, 0, true},
		{"large cache, hit at once", 2 * exactBelow, 0, false},
		{"large cache, hit after moveEvery", 2 * exactBelow, moveEvery, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			per := int64(entryOverhead + arena.ClassSize(100+4)) // keys of 4 bytes
			cfg := defCfg
			cfg.MaxBytes = per * int64(tc.entries)
			cfg.MaxObjectBytes = 100
			c, clk := newCache(t, cfg, Deps{})
			load := func(context.Context, string, *Entry) (*Entry, error) {
				return NewEntry(make([]byte, 100), Meta{}), nil
			}
			for i := range tc.entries {
				if _, _, err := c.Get(t.Context(), fmt.Sprintf("k%03d", i), load); err != nil {
					t.Fatal(err)
				}
			}
			if c.Len() != tc.entries {
				t.Fatalf("%d entries, want %d", c.Len(), tc.entries)
			}
			clk.Add(tc.wait)
			if _, out, _ := c.Get(t.Context(), "k000", load); out != Hit {
				t.Fatalf("k0: %v, want a hit", out)
			}
			c.Get(t.Context(), "knew", load) // evicts one entry
			_, kept := c.st.lru.Peek(c.hash("k000"))
			_, k1 := c.st.lru.Peek(c.hash("k001"))
			if kept != tc.kept || k1 == tc.kept {
				t.Fatalf("after the hit on k0 and one eviction: k0 kept %v, k1 kept %v; want k0 %v", kept, k1, tc.kept)
			}
		})
	}
}

// TestHashCollision: the LRU is keyed by a 64-bit hash of the key, so two
// keys could in principle share a slot. Neither may then be answered with
// the other's entry: a lookup checks the key (a miss otherwise), storing
// replaces the other entry, and removing a key leaves the other's alone.
// Real collisions cannot be found, so one is planted.
func TestHashCollision(t *testing.T) {
	c, _ := newCache(t, defCfg, Deps{})
	other := &origin{body: "other tile", etag: `"o"`}
	if _, _, err := c.Get(t.Context(), "other", other.load); err != nil {
		t.Fatal(err)
	}
	// Move "other"'s entry into the slot of "mine".
	c.mu.Lock()
	e, _ := c.st.lru.Peek(c.hash("other"))
	c.st.lru.Remove(c.hash("other")) // the callback uncounts it
	c.st.lru.Add(c.hash("mine"), e)
	c.st.bytes += c.recs.at(e).size
	c.mu.Unlock()

	c.remove("mine") // must not drop the other key's entry
	if c.Len() != 1 {
		t.Fatal("removing one key dropped the entry of another in its slot")
	}
	mine := &origin{body: "my tile", etag: `"m"`}
	got, out, err := c.Get(t.Context(), "mine", mine.load)
	if err != nil || out != Miss || text(got) != "my tile" {
		t.Fatalf("lookup in a slot holding another key's entry: %v %v %q; want a miss that loads my tile", out, err, text(got))
	}
	if c.Len() != 1 || c.Bytes() != got.rec().size {
		t.Fatalf("after storing over the other entry: %d entries, %d bytes; want 1, %d", c.Len(), c.Bytes(), got.rec().size)
	}
	if got, out, _ := c.Get(t.Context(), "mine", mine.load); out != Hit || text(got) != "my tile" {
		t.Fatalf("second lookup: %v %q, want a hit on my tile", out, text(got))
	}
}

// TestRemoveIf drops exactly the entries the predicate names, with their
// bytes.
func TestRemoveIf(t *testing.T) {
	c, err := New(Config{MaxBytes: 1 << 20, MaxObjectBytes: 1 << 16, TTL: time.Hour, LoadTimeout: time.Minute}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(body string) LoadFunc {
		return func(context.Context, string, *Entry) (*Entry, error) {
			return NewEntry([]byte(body), Meta{ContentType: "image/png", ETag: `"e"`}), nil
		}
	}
	for _, k := range []string{"tiles/a/1.png", "tiles/a/2.png", "tiles/ab/1.png", "other/a/1.png"} {
		if _, _, err := c.Get(context.Background(), k, load(strings.Repeat("x", 100))); err != nil {
			t.Fatal(err)
		}
	}
	before := c.Bytes()
	n := c.RemoveIf(func(key string) bool { return strings.HasPrefix(key, "tiles/a/") })
	if n != 2 {
		t.Fatalf("removed %d, want 2", n)
	}
	for k, want := range map[string]bool{"tiles/a/1.png": false, "tiles/a/2.png": false, "tiles/ab/1.png": true, "other/a/1.png": true} {
		if _, ok := c.lookup(k, time.Now()); ok != want {
			t.Errorf("%s cached: %v, want %v", k, ok, want)
		}
	}
	if c.Bytes() >= before || c.Bytes() <= 0 {
		t.Errorf("bytes %d after removing two of four (before %d)", c.Bytes(), before)
	}
}

// text is e's body as a string.
func text(e Entry) string {
	b, err := io.ReadAll(e.NewRangeReader(0, e.Len()))
	if err != nil {
		return "read error: " + err.Error()
	}
	return string(b)
}

// TestRemoveIfBeatsLoadInFlight: a load that began before a RemoveIf
// whose predicate takes its key serves its caller but stores nothing (a
// reload's removed tileset, a replaced archive); a load of another key in
// the same window is stored, and so is one that begins after. Past
// maxRemovals removals, an old load stores nothing at all.
func TestRemoveIfBeatsLoadInFlight(t *testing.T) {
	c, _ := newCache(t, defCfg, Deps{})
	gate := make(chan struct{})
	started := make(chan struct{}, 2)
	slow := func(_ context.Context, key string, _ *Entry) (*Entry, error) {
		started <- struct{}{}
		<-gate
		return NewEntry([]byte("body of "+key), Meta{ETag: `"e"`}), nil
	}
	type got struct {
		body string
		err  error
	}
	results := make(chan got, 2)
	for _, k := range []string{"gone/1", "kept/1"} {
		go func() {
			e, _, err := c.Get(context.Background(), k, slow)
			if err != nil {
				results <- got{err: err}
				return
			}
			b, _ := io.ReadAll(e.NewRangeReader(0, e.Len()))
			e.Release()
			results <- got{body: string(b)}
		}()
	}
	<-started
	<-started
	if n := c.RemoveIf(func(k string) bool { return strings.HasPrefix(k, "gone/") }); n != 0 {
		t.Fatalf("RemoveIf dropped %d entries of an empty cache", n)
	}
	close(gate)
	for range 2 {
		if r := <-results; r.err != nil || !strings.HasPrefix(r.body, "body of ") {
			t.Fatalf("a caller got %q, %v; want its body", r.body, r.err)
		}
	}
	if n := c.RemoveIf(func(k string) bool { return strings.HasPrefix(k, "gone/") }); n != 0 {
		t.Errorf("the load in flight stored %d entries that the RemoveIf before it dropped", n)
	}
	if c.Len() != 1 {
		t.Errorf("%d entries cached, want 1 (kept/1)", c.Len())
	}
	// A load that begins after the removal stores as usual.
	fresh := func(context.Context, string, *Entry) (*Entry, error) { return NewEntry([]byte("new"), Meta{}), nil }
	e, _, err := c.Get(t.Context(), "gone/2", fresh)
	if err != nil {
		t.Fatal(err)
	}
	e.Release()
	if c.Len() != 2 {
		t.Errorf("%d entries cached, want 2", c.Len())
	}
	if c.st.removedSince(c.st.removed.Load()-maxRemovals-1, "any") != true {
		t.Error("a load older than the predicates kept may store")
	}
}
