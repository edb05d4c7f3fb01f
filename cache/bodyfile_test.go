package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/testenv"
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
		return NewEntry(bytes.Clone(body), "image/png", "", etag, time.Time{}), nil
	}
}

func readAll(t *testing.T, e *Entry) []byte {
	t.Helper()
	b, err := io.ReadAll(e.NewReader())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fileBlocks is what the memory file really takes, in bytes.
func fileBlocks(t *testing.T, c *Cache) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(c.files.f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestFileBody: a body of fileMin bytes or more is kept in the file and
// reads back whole; a smaller one stays on the heap. The file body counts
// whole pages and its Content-Length is its own.
func TestFileBody(t *testing.T) {
	c, _ := fileCache(t, defCfg)
	for _, n := range []int{fileMin - 1, fileMin, 20000, 3 * pageSize} {
		body := bodyOf(n, uint64(n))
		e, _, err := c.Get(t.Context(), fmt.Sprint("k", n), loadBody(body, `"e"`))
		if err != nil {
			t.Fatal(err)
		}
		inFile := n >= fileMin
		if (e.Section() != nil) != inFile || (e.Body == nil) != inFile {
			t.Errorf("%d bytes: in the file %v, want %v", n, e.Section() != nil, inFile)
		}
		if got := readAll(t, e); !bytes.Equal(got, body) || e.Len() != int64(n) || e.HeaderContentLength()[0] != fmt.Sprint(n) {
			t.Errorf("%d bytes: read back %d, Len %d, Content-Length %s", n, len(got), e.Len(), e.HeaderContentLength()[0])
		}
		want := int64(n)
		if inFile {
			want = roundPage(int64(n))
		}
		if got := e.Size() - int64(len("image/png")+len(`"e"`)) - entryOverhead; got != want {
			t.Errorf("%d bytes: counts %d for the body, want %d", n, got, want)
		}
	}
}

// waitFreed collects until the file's unpunched bytes come down to want
// (cleanups run after a cycle, on their own goroutine). The bound is on
// attempts, not on time.
func waitFreed(t *testing.T, c *Cache, want int64) {
	t.Helper()
	for range 200 {
		runtime.GC()
		if c.files.allocated.Load() <= want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("memory file holds %d bytes after 200 collections; want %d", c.files.allocated.Load(), want)
}

// TestFileBodyLifetime: an evicted body is freed (its pages punched out
// of the file) once nothing refers to it, and not before: a request that
// still holds the entry reads it whole after any number of collections.
func TestFileBodyLifetime(t *testing.T) {
	cfg := defCfg
	cfg.MaxBytes = 100 << 10 // three 20 KB bodies and change
	c, _ := fileCache(t, cfg)
	first := bodyOf(20000, 99)
	held, _, err := c.Get(t.Context(), "held", loadBody(first, `"h"`))
	if err != nil || held.Section() == nil {
		t.Fatalf("first body: %v, in file %v", err, held.Section() != nil)
	}
	for i := range 20 {
		if _, _, err := c.Get(t.Context(), fmt.Sprint("k", i), loadBody(bodyOf(20000, uint64(i)), `"e"`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := c.lookup("held", time.Now()); ok {
		t.Fatal("the held entry is still cached; the test needs it evicted")
	}
	c.mu.Lock()
	live := c.fileBytes
	c.mu.Unlock()
	page := roundPage(20000)
	waitFreed(t, c, live+page)
	if got := c.files.allocated.Load(); got != live+page {
		t.Fatalf("file holds %d bytes; want %d cached plus %d held", got, live, page)
	}
	if b := fileBlocks(t, c); b > live+page {
		t.Errorf("the file takes %d bytes of memory; punching should leave %d", b, live+page)
	}
	if got := readAll(t, held); !bytes.Equal(got, first) {
		t.Fatal("a held entry's body changed after it was evicted and collected")
	}
	runtime.KeepAlive(held)
	held = nil
	waitFreed(t, c, live)
	if b := fileBlocks(t, c); b > live {
		t.Errorf("after the last holder let go the file takes %d bytes; want %d", b, live)
	}
}

// TestFileBodyRevalidated: a 304 makes a new entry over the same bytes;
// the one it replaced going away does not free them.
func TestFileBodyRevalidated(t *testing.T) {
	c, clk := fileCache(t, defCfg)
	body := bodyOf(30000, 5)
	o := &origin{body: string(body), etag: `"v1"`}
	old, _, err := c.Get(t.Context(), "k", o.load)
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	fresh, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Hit || o.revs.Load() != 1 || fresh == old {
		t.Fatalf("revalidation: %v %v, %d revalidations, new entry %v", out, err, o.revs.Load(), fresh != old)
	}
	if fresh.file == nil || fresh.off != old.off || fresh.owner != old {
		t.Fatal("the revalidated entry does not share the old entry's body")
	}
	clk.Add(2 * time.Minute)
	again, out, err := c.Get(t.Context(), "k", o.load)
	if err != nil || out != Hit || again.owner != old {
		t.Fatalf("second revalidation: %v %v; it must point at the entry that owns the body, not at the one it replaces", out, err)
	}
	old, fresh = nil, nil
	for range 5 {
		runtime.GC()
	}
	if got := readAll(t, again); !bytes.Equal(got, body) {
		t.Fatal("the revalidated entry's body changed when the entries before it were collected")
	}
	// A new version replaces it; once nothing holds the old body, its
	// pages go, owner and all.
	o.mu.Lock()
	o.body, o.etag = string(bodyOf(9000, 6)), `"v2"`
	o.mu.Unlock()
	clk.Add(2 * time.Minute)
	if _, out, err := c.Get(t.Context(), "k", o.load); err != nil || out != Miss {
		t.Fatalf("new version: %v %v, want a miss", out, err)
	}
	again = nil
	waitFreed(t, c, roundPage(9000))
}

// TestFileChurnBounded: bodies streaming through a small cache as fast as
// a loop can add them, as distinct tiles (evicting) or as new versions of
// one tile (replacing, nothing evicted): the cache asks for collections,
// so the file stays near max_bytes instead of growing with everything
// written.
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
			var peak int64
			for i := range 2000 { // 40 MB through 2 MiB
				clk.Add(2 * cfg.TTL) // so that one tile is fetched again each time
				if _, _, err := c.Get(t.Context(), tc.key(i), loadBody(body, fmt.Sprintf(`"%d"`, i))); err != nil {
					t.Fatal(err)
				}
				peak = max(peak, c.files.allocated.Load())
			}
			t.Logf("40 MB through a 2 MiB cache: file peaked at %.1f MiB, %d collections asked for", float64(peak)/(1<<20), c.files.gcs.Load())
			if c.files.gcs.Load() == 0 {
				// The loop's own garbage may get the file freed anyway;
				// the cache must not count on it.
				t.Error("the cache asked for no collection")
			}
			// Past 3 x slack a store waits for a collection, so the file
			// stays within max_bytes + 3 x slack plus what one wait could
			// not free (a body or two) however the background collections
			// are scheduled.
			if limit := cfg.MaxBytes + 3*c.fileSlack() + 4*roundPage(20000); peak > limit {
				t.Errorf("file peaked at %d bytes; want at most %d", peak, limit)
			}
			c.mu.Lock()
			live := c.fileBytes
			c.mu.Unlock()
			waitFreed(t, c, live)
		})
	}
}
