package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/cache/internal/arena"
	"github.com/tileproxy/tileproxy/cache/internal/memfile"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// fileCache is a cache that must keep large bodies in its memory file:
// on Linux a cache without one is a failure, not a skip.
func fileCache(t *testing.T, cfg Config) (*Cache, *testenv.Clock) {
	t.Helper()
	c, clk := newCache(t, cfg, Deps{})
	if !c.FileBacked() {
		if runtime.GOOS == "linux" {
			t.Fatal("no memory file on Linux")
		}
		t.Skip("bodies are on the heap on " + runtime.GOOS)
	}
	return c, clk
}

func bodyOf(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func loadBody(body []byte, etag string) LoadFunc {
	return func(context.Context, string, *Entry) (*Entry, error) {
		return NewEntry(bytes.Clone(body), Meta{ContentType: "image/png", ETag: etag}), nil
	}
}

func readAll(t *testing.T, e *Entry) []byte {
	t.Helper()
	b, err := io.ReadAll(e.NewRangeReader(0, e.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fileBlocks is what the memory file really takes, in bytes.
func fileBlocks(t *testing.T, c *Cache) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(c.files.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestFileBody: a body of fileMin bytes or more is kept in the file and
// reads back whole; a smaller one stays on the heap. The file body counts
// whole pages and its Content-Length is its own.
func TestFileBody(t *testing.T) {
	c, _ := fileCache(t, defCfg)
	for _, n := range []int{fileMin - 1, fileMin, 20000, 3 * memfile.PageSize} {
		body := bodyOf(n, uint64(n))
		e, _, err := c.Get(t.Context(), fmt.Sprint("k", n), loadBody(body, `"e"`))
		if err != nil {
			t.Fatal(err)
		}
		inFile := n >= fileMin
		if e.InFile() != inFile {
			t.Errorf("%d bytes: in the file %v, want %v", n, e.InFile(), inFile)
		}
		if got := readAll(t, &e); !bytes.Equal(got, body) || e.Len() != int64(n) {
			t.Errorf("%d bytes: read back %d, Len %d", n, len(got), e.Len())
		}
		text := len("image/png") + len(`"e"`) + len(fmt.Sprint("k", n))
		want := int64(entryOverhead + arena.ClassSize(text+n))
		if inFile {
			want = int64(entryOverhead+arena.ClassSize(text)) + memfile.RoundPage(int64(n))
		}
		if got := e.rec().size; got != want {
			t.Errorf("%d bytes: counts %d, want %d", n, got, want)
		}
	}
}

// allocated is what the memory file holds, and what the entries in the
// LRU hold of it.
func allocated(c *Cache) (file, cached int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.st.lru.Keys() {
		i, _ := c.st.lru.Peek(h)
		if r := c.recs.at(i); r.is(fFile) {
			cached += r.file.Memory()
		}
	}
	return c.files.Allocated(), cached
}

// TestFileBodyLifetime: an evicted body stays whole while a reader holds
// it, and its pages are punched out of the file the moment the last
// reader releases it: no collection, no waiting.
func TestFileBodyLifetime(t *testing.T) {
	cfg := defCfg
	cfg.MaxBytes = 100 << 10 // three 20 KB bodies and change
	c, _ := fileCache(t, cfg)
	first := bodyOf(20000, 99)
	held, _, err := c.Get(t.Context(), "held", loadBody(first, `"h"`))
	if err != nil || !held.InFile() {
		t.Fatalf("first body: %v, in file %v", err, held.InFile())
	}
	second, _, err := c.Get(t.Context(), "held", nil) // a second reader of the same entry
	if err != nil || second.rec() != held.rec() {
		t.Fatalf("second reader: %v", err)
	}
	for i := range 20 {
		e, _, err := c.Get(t.Context(), fmt.Sprint("k", i), loadBody(bodyOf(20000, uint64(i)), `"e"`))
		if err != nil {
			t.Fatal(err)
		}
		e.Release()
	}
	if e, ok := c.lookup("held", time.Now()); ok {
		e.Release()
		t.Fatal("the held entry is still cached; the test needs it evicted")
	}
	page := memfile.RoundPage(20000)
	file, live := allocated(c)
	if file != live+page {
		t.Fatalf("file holds %d bytes; want %d cached plus %d held", file, live, page)
	}
	if b := fileBlocks(t, c); b > live+page {
		t.Errorf("the file takes %d bytes of memory; punching should leave %d", b, live+page)
	}
	if got := readAll(t, &held); !bytes.Equal(got, first) {
		t.Fatal("a held entry's body changed after it was evicted")
	}
	held.Release()
	if file, _ := allocated(c); file != live+page {
		t.Fatalf("one of two readers released: file holds %d, want %d", file, live+page)
	}
	if got := readAll(t, &second); !bytes.Equal(got, first) {
		t.Fatal("the second reader's body changed when the first released")
	}
	second.Release()
	if file, _ := allocated(c); file != live {
		t.Fatalf("last reader released: file holds %d bytes, want %d at once", file, live)
	}
	if b := fileBlocks(t, c); b > live {
		t.Errorf("after the last reader let go the file takes %d bytes; want %d", b, live)
	}
	if n := c.misuses.Load(); n != 0 {
		t.Errorf("%d releases of entries not held", n)
	}
}

// TestFileBodyRevalidated: a 304 renews the cached record in place, body
// and all, and a new version frees the old body once its last reader is
// done.
func TestFileBodyRevalidated(t *testing.T) {
	c, clk := fileCache(t, defCfg)
	body := bodyOf(30000, 5)
	o := &origin{body: string(body), etag: `"v1"`}
	old, _, err := c.Get(t.Context(), "k", o.load)
	if err != nil {
		t.Fatal(err)
	}
	oldFile := old.file
	old.Release()
	clk.Add(2 * time.Minute)
	fresh, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Hit || o.revs.Load() != 1 {
		t.Fatalf("revalidation: %v %v, %d revalidations", out, err, o.revs.Load())
	}
	if !fresh.InFile() || fresh.file != oldFile {
		t.Fatal("the revalidated entry does not keep the old entry's body")
	}
	clk.Add(2 * time.Minute)
	again, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Hit || again.file != oldFile {
		t.Fatalf("second revalidation: %v %v", out, err)
	}
	fresh.Release()
	if got := readAll(t, &again); !bytes.Equal(got, body) {
		t.Fatal("the revalidated entry's body changed when the entries before it went")
	}
	// A new version replaces it; the old block stays while again is
	// held and goes when it is released.
	o.mu.Lock()
	o.body, o.etag = string(bodyOf(9000, 6)), `"v2"`
	o.mu.Unlock()
	clk.Add(2 * time.Minute)
	v2, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Miss {
		t.Fatalf("new version: %v %v, want a miss", out, err)
	}
	v2.Release()
	if file, _ := allocated(c); file != memfile.RoundPage(9000)+memfile.RoundPage(30000) {
		t.Fatalf("file holds %d bytes with the old version still read", file)
	}
	again.Release()
	if file, _ := allocated(c); file != memfile.RoundPage(9000) {
		t.Fatalf("file holds %d bytes after the old version's last reader; want %d", file, memfile.RoundPage(9000))
	}
}

// TestFileChurnBounded: bodies streaming through a small cache as fast as
// a loop can add them, as distinct tiles (evicting) or as new versions of
// one tile (replacing): with every reader done, the file holds exactly
// what the cache holds, at every step.
func TestFileChurnBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(i int) string
	}{
		{"distinct tiles", func(i int) string { return fmt.Sprint("k", i) }},
		{"one tile replaced", func(int) string { return "k" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := defCfg
			cfg.MaxBytes = 2 << 20
			c, clk := fileCache(t, cfg)
			body := bodyOf(20000, 1)
			for i := range 2000 { // 40 MB through 2 MiB
				clk.Add(2 * cfg.TTL) // so that one tile is fetched again each time
				e, _, err := c.Get(t.Context(), tc.key(i), loadBody(body, fmt.Sprintf(`"%d"`, i)))
				if err != nil {
					t.Fatal(err)
				}
				e.Release()
				if file, cached := allocated(c); file != cached || cached > cfg.MaxBytes {
					t.Fatalf("step %d: file holds %d bytes, cache %d (max_bytes %d)", i, file, cached, cfg.MaxBytes)
				}
			}
		})
	}
}

// TestConcurrentLifetimes runs readers, stores of new versions and
// evictions at once (under -race in the test command): no reader ever
// reads bytes other than its own object's, the file never holds more than
// the cache plus one body per reader, and once everyone is done it holds
// exactly what the cache holds.
func TestConcurrentLifetimes(t *testing.T) {
	t.Run("file bodies", func(t *testing.T) { concurrentLifetimes(t, 20000) })
	t.Run("arena bodies", func(t *testing.T) { concurrentLifetimes(t, 3000) })
}

func concurrentLifetimes(t *testing.T, size int) {
	cfg := defCfg
	cfg.MaxBytes = int64(12 * (size + 500)) // ~12 bodies: constant eviction over 40 keys
	cfg.MaxObjectBytes = int64(size)
	c, _ := fileCache(t, cfg)
	const keys, readers, rounds = 40, 6, 300
	// body k/v starts with its own name, then bytes derived from it, so
	// a reader can tell its object's bytes from any other's.
	bodyFor := func(k, v int) []byte {
		b := bodyOf(size, uint64(k)<<20|uint64(v))
		copy(b, fmt.Sprintf("k%02d/v%06d/", k, v))
		return b
	}
	var version [keys]atomic.Int64
	load := func(_ context.Context, key string, _ *Entry) (*Entry, error) {
		var k int
		fmt.Sscanf(key, "k%d", &k)
		v := int(version[k].Load())
		return NewEntry(bodyFor(k, v), Meta{ETag: fmt.Sprintf(`"%d"`, v)}), nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, readers+1)
	var peak, churned atomic.Int64
	for r := range readers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 2))
			for range rounds {
				k := rng.IntN(keys)
				e, _, err := c.Get(context.Background(), fmt.Sprintf("k%02d", k), load)
				if errors.Is(err, ErrChurn) {
					// Under this flood of stores an entry can leave
					// before a waiter holds it, every try: the caller
					// gets a 503. That is availability, not what this
					// test judges, so long as it stays rare.
					churned.Add(1)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(e.NewRangeReader(0, e.Len()))
				file, cached := allocated(c)
				e.Release()
				if err != nil {
					errs <- err
					return
				}
				var v int
				if _, err := fmt.Sscanf(string(got[:16]), fmt.Sprintf("k%02d/v%%06d/", k), &v); err != nil || !bytes.Equal(got, bodyFor(k, v)) {
					errs <- fmt.Errorf("reader of k%02d got another object's bytes (%q...)", k, got[:16])
					return
				}
				if over := file - cached; over > readers*memfile.RoundPage(int64(size)) {
					errs <- fmt.Errorf("file holds %d bytes beyond the cache's with %d readers", over, readers)
					return
				}
				peak.Store(max(peak.Load(), file))
			}
		})
	}
	wg.Go(func() { // new versions of every key, replacing cached ones
		for i := range rounds {
			k := i % keys
			version[k].Add(1)
			c.remove(fmt.Sprintf("k%02d", k))
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := churned.Load(); n > readers*rounds/20 {
		t.Errorf("%d of %d reads met ErrChurn", n, readers*rounds)
	}
	if file, cached := allocated(c); file != cached {
		t.Fatalf("all readers done: file holds %d bytes, cache %d", file, cached)
	}
	if n := c.misuses.Load(); n != 0 {
		t.Errorf("%d releases of entries not held", n)
	}
	assertAllFreed(t, c)
	t.Logf("file peaked at %d KiB for a %d KiB cache", peak.Load()>>10, cfg.MaxBytes>>10)
}

// assertAllFreed empties c and checks that every byte and record it took
// came back: the arena's spans, the memory file's pages, the slab's
// records.
func assertAllFreed(t *testing.T, c *Cache) {
	t.Helper()
	c.RemoveIf(func(string) bool { return true })
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Fatalf("emptied: %d entries, %d bytes", c.Len(), c.Bytes())
	}
	if n := c.OffHeapBytes(); n != 0 {
		t.Errorf("emptied: %d bytes outside the heap still taken", n)
	}
	c.recs.mu.Lock()
	defer c.recs.mu.Unlock()
	if len(c.recs.free) != int(c.recs.next) {
		t.Errorf("emptied: %d of %d records free", len(c.recs.free), c.recs.next)
	}
}

// TestReleaseTwice: every copy of an Entry shares one hold, so releasing
// it again, through the same variable or a copy, does nothing: the
// cache's own hold survives, the entry stays cached and whole, and it is
// freed once when it leaves.
func TestReleaseTwice(t *testing.T) {
	c, _ := fileCache(t, defCfg)
	body := bodyOf(20000, 7)
	e, _, err := c.Get(t.Context(), "k", loadBody(body, `"k"`))
	if err != nil {
		t.Fatal(err)
	}
	cp := e
	e.Release()
	e.Release()
	cp.Release()
	again, out, err := c.Get(t.Context(), "k", nil)
	if err != nil || out != Hit {
		t.Fatalf("after three releases of one hold: %v %v, want a hit", out, err)
	}
	if got := readAll(t, &again); !bytes.Equal(got, body) {
		t.Fatal("the entry's body changed")
	}
	again.Release()
	if n := c.misuses.Load(); n != 0 {
		t.Errorf("%d releases of entries not held", n)
	}
	assertAllFreed(t, c)
}
