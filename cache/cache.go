// Package cache keeps hot tiles in memory: an LRU bounded by bytes, with a
// freshness TTL, revalidation, remembered misses, stale-if-error, and one
// origin fetch per key however many requests miss at once. On Linux,
// bodies of 8 KiB and more are kept in an anonymous memory file, so that
// hits can send them with sendfile (see bodyFile and Entry.Section).
//
// The cache knows keys and bytes, never users or tokens: callers decide
// authorization before they look anything up.
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/config"
)

// Sentinels a LoadFunc returns (wrapped is fine) to steer the cache.
var (
	// ErrNotFound: the object does not exist; remembered for NegativeTTL.
	ErrNotFound = errors.New("cache: not found")
	// ErrNotModified: revalidation found the cached copy current.
	ErrNotModified = errors.New("cache: not modified")
)

// entryOverhead is the memory an entry takes besides its body: the Entry
// (448 bytes), the LRU's list element and map slot: ~555 bytes measured
// (a key too long to intern counts its length besides). It is counted so
// that many tiny entries (remembered misses, say) cannot exceed max_bytes
// by hiding in overhead; TestOverheadCounted holds it to the heap.
const entryOverhead = 640

// Entry is a cached object. It is immutable once returned (revalidation
// stores a new Entry rather than touching one that readers may hold),
// except for the cache's own LRU bookkeeping, written atomically.
//
// Every cached entry is visited by the collector on every cycle, and so
// is every pointer in it that is not nil; a cycle's length is what the
// requests in flight wait through (bench/README.md). So an Entry holds
// one copy of each header value (hdr), and a file body has no object of
// its own beyond the Entry (owner). BenchmarkGCMark measures the cost.
type Entry struct {
	// What a hit reads comes first and its text sits in the Entry itself
	// (see render), so a hit on one of thousands of entries touches one
	// stretch of memory, not four: with a working set larger than the CPU
	// caches, each extra place was a cache and TLB miss, ~0.3 µs apiece
	// on the benchmark machine.

	// moved is when the entry last went to the front of the LRU list
	// (Unix ns, read and written atomically: hits read it under RLock).
	moved  int64
	stored time.Time // when fetched or last revalidated
	// Large marks an object over max_object_bytes: nothing is cached but
	// the fact, so later requests stream it straight away.
	Large bool
	// Negative marks a remembered miss.
	Negative bool
	// Body is the body when it is on the heap; nil when it is in the
	// cache's memory file (bodies of fileMin bytes and more), which
	// Section reads. Len and NewReader serve either.
	Body []byte
	// Where a body in the memory file is: file is nil for a body on the
	// heap. The pages are freed by a cleanup on the entry that put them
	// there, once it is unreachable; owner is that entry when it is not
	// e (a revalidated copy), so that holding e keeps them too. (That
	// keeps the owner's ~450 bytes alive with them, uncounted: it is
	// one per body, however often the body is revalidated.)
	file  *os.File
	off   int64
	n     int64
	owner *Entry
	// Header values rendered once (Content-Length, -Type, ETag,
	// Last-Modified, -Encoding), so a hit sets headers without formatting
	// or allocating; the Header methods hand them out as one-element
	// slices of this array, and the plain accessors as strings.
	hdr [5]string
	// text holds the header values and then the key, when they fit (they
	// do for S3's ETags and keys of ordinary length); strings point into
	// it, so it is written only before the Entry is shared.
	text [textSize]byte

	// Off the plain-hit path: misses, revalidation, conditional requests.
	LastModified time.Time
	size         int64
	// key is the cache key, in text when it fitted (intern). The LRU is
	// keyed by its hash, so a lookup checks it.
	key string
}

// textSize fits Content-Length, a 30-byte Content-Type, a multipart ETag,
// Last-Modified and a 90-byte key.
const textSize = 208

// NewEntry builds an Entry for an object body.
func NewEntry(body []byte, contentType, contentEncoding, etag string, lastModified time.Time) *Entry {
	e := &Entry{Body: body, LastModified: lastModified.UTC()}
	e.render(contentType, etag, contentEncoding)
	return e
}

// renewed is a copy of e for a revalidation that found it current: the
// same body, wherever it is, under a new Entry (readers may hold e).
func (e *Entry) renewed() *Entry {
	f := &Entry{Body: e.Body, file: e.file, off: e.off, n: e.n, LastModified: e.LastModified}
	if e.file != nil {
		f.owner = e
		if e.owner != nil {
			f.owner = e.owner
		}
	}
	f.render(e.ContentType(), e.ETag(), e.ContentEncoding())
	return f
}

// ContentType is the object's Content-Type, "" when it has none.
func (e *Entry) ContentType() string { return e.hdr[1] }

// ETag is the object's ETag, "" when it has none.
func (e *Entry) ETag() string { return e.hdr[2] }

// ContentEncoding is the object's Content-Encoding, "" when it has none.
func (e *Entry) ContentEncoding() string { return e.hdr[4] }

// Len is the body's length.
func (e *Entry) Len() int64 {
	if e.file != nil {
		return e.n
	}
	return int64(len(e.Body))
}

// Section reads a body kept in the memory file, nil for one on the heap.
// It is an *io.SectionReader over an *os.File, which coalesce sends with
// sendfile; the bytes stay valid as long as e is reachable, so keep e
// alive (runtime.KeepAlive) until the copy has returned.
func (e *Entry) Section() *io.SectionReader {
	if e.file == nil {
		return nil
	}
	return io.NewSectionReader(e.file, e.off, e.n)
}

// NewReader reads the body wherever it is kept (see Section on keeping e
// alive).
func (e *Entry) NewReader() io.ReadSeeker {
	if s := e.Section(); s != nil {
		return s
	}
	return bytes.NewReader(e.Body)
}

// memory is what the body takes: a file body takes whole pages.
func (e *Entry) memory() int64 {
	if e.file != nil {
		return roundPage(e.n)
	}
	return int64(len(e.Body))
}

// toFile moves the body into b, unless it is small or cannot go; called
// before e is shared.
func (e *Entry) toFile(b *bodyFile) {
	if b == nil || e.file != nil || len(e.Body) < fileMin {
		return
	}
	off, err := b.put(e, e.Body)
	if err != nil {
		return // stays on the heap, which works as well
	}
	e.size -= e.memory()
	e.file, e.off, e.n, e.Body = b.f, off, int64(len(e.Body)), nil
	e.size += e.memory()
}

// NewLargeEntry marks an object too large to cache, without its body.
func NewLargeEntry() *Entry {
	e := &Entry{Large: true}
	e.render("", "", "")
	return e
}

// render fills the header values. Their text goes into e.text when it
// fits (one allocation otherwise).
func (e *Entry) render(contentType, etag, contentEncoding string) {
	var lm string
	if !e.LastModified.IsZero() {
		lm = e.LastModified.UTC().Format(http.TimeFormat)
	}
	cl := strconv.FormatInt(e.Len(), 10)
	all := cl + contentType + etag + lm + contentEncoding
	if n := copy(e.text[:], all); n == len(all) && n > 0 {
		all = unsafe.String(&e.text[0], n)
	}
	next := func(n int) string {
		v := all[:n]
		all = all[n:]
		return v
	}
	e.hdr = [5]string{next(len(cl)), next(len(contentType)), next(len(etag)), next(len(lm)), next(len(contentEncoding))}
	e.size = e.memory() + int64(len(contentType)+len(contentEncoding)+len(etag)) + entryOverhead
}

// intern returns key as the Entry should hold it: a copy inside e.text
// when there is room after the header values, so a lookup's key
// comparison reads the memory the hit reads next anyway; otherwise key
// itself, whose bytes then count in e.size. Called once, before e is
// shared.
func (e *Entry) intern(key string) string {
	used := 0
	for _, h := range e.hdr {
		used += len(h)
	}
	switch {
	case e.key != "": // interned before: leave e.text alone
		return key
	case unsafe.StringData(e.hdr[0]) != &e.text[0] || len(key) > textSize-used:
		e.key = key
		e.size += int64(len(key)) // held outside the Entry: count it
	default:
		copy(e.text[used:], key)
		e.key = unsafe.String(&e.text[used], len(key))
	}
	return e.key
}

// header is hdr[i] as a header value, or nil when empty. The slice points
// into the Entry (capacity 1, so nobody's append can write there): making
// it costs no allocation and reads no memory but hdr[i] itself.
func (e *Entry) header(i int) []string {
	if e.hdr[i] == "" {
		return nil
	}
	return e.hdr[i : i+1 : i+1]
}

// HeaderContentLength is the Content-Length header value.
func (e *Entry) HeaderContentLength() []string { return e.hdr[0:1:1] }

// HeaderContentType is the Content-Type header value; nil when the object
// has none, which as a header value also stops net/http from sniffing one.
func (e *Entry) HeaderContentType() []string { return e.header(1) }

// HeaderETag is the ETag header value, nil when there is none.
func (e *Entry) HeaderETag() []string { return e.header(2) }

// HeaderLastModified is the Last-Modified header value, nil when there is none.
func (e *Entry) HeaderLastModified() []string { return e.header(3) }

// HeaderEncoding is the Content-Encoding header value, nil when there is none.
func (e *Entry) HeaderEncoding() []string { return e.header(4) }

// Size is what the entry counts against max_bytes.
func (e *Entry) Size() int64 { return e.size }

// LoadFunc fetches key (as given to Get) from the origin. prev is the expired entry being
// revalidated (nil on a miss): send prev.ETag() as If-None-Match and return
// ErrNotModified on a 304. Return ErrNotFound for a missing object and any
// other error for an origin failure (eligible for stale-if-error).
type LoadFunc func(ctx context.Context, key string, prev *Entry) (*Entry, error)

// Outcome says how a lookup was answered.
type Outcome int

// Outcomes of Get.
const (
	Miss     Outcome = iota // fetched from the origin now
	Hit                     // fresh, or revalidated with a 304
	Stale                   // origin failed; an expired copy within stale_if_error
	Negative                // a remembered miss
)

// String is the metrics label (cache_requests_total{result}).
func (o Outcome) String() string {
	return [...]string{"miss", "hit", "stale", "negative"}[o]
}

// Header is the X-Cache value.
func (o Outcome) Header() string {
	return [...]string{"MISS", "HIT", "STALE", "HIT"}[o]
}

// Deps are the cache's collaborators; zero values get defaults.
type Deps struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// OnChange is called (under no lock) after the cache's totals change.
	OnChange func(bytes, objects int64)
	// OnEvict is called once per entry evicted for space.
	OnEvict func()
	// Flight coalesces concurrent loads; a singleflight.Group when nil.
	// Tests substitute one to force interleavings.
	Flight Flight
}

// Flight is the part of singleflight.Group the cache uses.
type Flight interface {
	DoChan(key string, fn func() (any, error)) <-chan singleflight.Result
}

// Config is the cache's configuration, in the units it uses.
type Config struct {
	MaxBytes       int64
	MaxObjectBytes int64
	TTL            time.Duration
	NegativeTTL    time.Duration
	StaleIfError   time.Duration
	// LoadTimeout bounds one shared origin fetch, body included, since it
	// runs detached from the requests that wait for it.
	LoadTimeout time.Duration
}

// FromConfig converts the YAML cache section. loadTimeout is usually a
// small multiple of the origin timeout.
func FromConfig(c config.Cache, loadTimeout time.Duration) Config {
	return Config{
		MaxBytes:       int64(c.MaxBytes),
		MaxObjectBytes: int64(c.MaxObjectBytes),
		TTL:            c.TTL.Duration(),
		NegativeTTL:    c.NegativeTTL.Duration(),
		StaleIfError:   c.StaleIfError.Duration(),
		LoadTimeout:    loadTimeout,
	}
}

// Validate reports settings the cache cannot work with.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 || c.MaxObjectBytes < 0 || c.MaxObjectBytes > c.MaxBytes {
		errs = append(errs, fmt.Errorf("cache: need 0 <= max_object_bytes (%d) <= max_bytes (%d)", c.MaxObjectBytes, c.MaxBytes))
	}
	if c.TTL < 0 || c.NegativeTTL < 0 || c.StaleIfError < 0 {
		errs = append(errs, errors.New("cache: durations must not be negative"))
	}
	if c.LoadTimeout <= 0 {
		errs = append(errs, errors.New("cache: load timeout must be positive"))
	}
	return errors.Join(errs...)
}

// Cache is safe for concurrent use.
type Cache struct {
	cfg    Config
	now    func() time.Time
	flight Flight
	deps   Deps

	// files holds large bodies (see bodyFile); nil where the system has
	// no memory files, and then every body is on the heap.
	files *bodyFile

	mu sync.RWMutex // protects lru, bytes and fileBytes; simplelru is not safe alone
	// lru is keyed by a hash of the key, not the key: the collector
	// follows every pointer in the cache on every cycle, and a string key
	// is two more (in the map and in the list element) per entry. That
	// was over a third of a cycle's cost per entry (BenchmarkGCMark),
	// and a cycle's length is what requests in flight wait through. The
	// Entry keeps its key: a lookup whose entry has another key (a
	// 64-bit collision) is a miss, and storing it replaces that entry.
	lru       *simplelru.LRU[uint64, *Entry]
	seed      maphash.Seed
	bytes     int64
	fileBytes int64 // what entries in lru hold of the memory file
}

// New builds a cache.
func New(cfg Config, deps Deps) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Flight == nil {
		deps.Flight = &singleflight.Group{}
	}
	c := &Cache{cfg: cfg, now: deps.Now, flight: deps.Flight, deps: deps, seed: maphash.MakeSeed()}
	if files, err := newBodyFile(); err == nil {
		c.files = files
	}
	// Entries are bounded by bytes, not count: the count limit is set out
	// of reach and eviction is driven by c.bytes in add.
	l, err := simplelru.NewLRU[uint64, *Entry](1<<30, func(_ uint64, e *Entry) {
		c.bytes -= e.size
		if e.file != nil {
			c.fileBytes -= e.memory()
		}
	})
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
}

// FileBacked reports whether large bodies go to a memory file, to be sent
// with sendfile; otherwise they are on the heap.
func (c *Cache) FileBacked() bool { return c.files != nil }

// FileBytes is the memory the memory file takes: the bodies of cached
// entries, and those evicted but not yet freed (see bodyFile).
func (c *Cache) FileBytes() int64 {
	if c.files == nil {
		return 0
	}
	return c.files.allocated.Load()
}

// MaxObjectBytes is the largest body the cache keeps.
func (c *Cache) MaxObjectBytes() int64 { return c.cfg.MaxObjectBytes }

// Get returns the entry for key, loading it with load on a miss or after
// its TTL. A negative entry comes back as ErrNotFound with outcome
// Negative. A caller whose ctx ends stops waiting; the shared load goes on
// for the others and still fills the cache.
func (c *Cache) Get(ctx context.Context, key string, load LoadFunc) (*Entry, Outcome, error) {
	now := c.now()
	e, ok := c.lookup(key, now)
	if ok && c.fresh(e, now) {
		if e.Negative {
			return nil, Negative, ErrNotFound
		}
		return e, Hit, nil
	}
	ch := c.flight.DoChan(key, func() (any, error) { return c.load(ctx, key, load) })
	select {
	case <-ctx.Done():
		return nil, Miss, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			return nil, Miss, r.Err
		}
		res := r.Val.(result)
		if res.entry.Negative {
			return nil, res.outcome, ErrNotFound
		}
		return res.entry, res.outcome, nil
	}
}

type result struct {
	entry   *Entry
	outcome Outcome
}

// load runs once per key at a time (inside the flight).
func (c *Cache) load(ctx context.Context, key string, load LoadFunc) (result, error) {
	// Another flight may have filled the entry between our look and now.
	now := c.now()
	prev, ok := c.lookup(key, now)
	if ok && c.fresh(prev, now) {
		if prev.Negative {
			return result{prev, Negative}, nil
		}
		return result{prev, Hit}, nil
	}
	// Detached: the first caller leaving must not fail everyone else.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
	defer cancel()
	var revalidate *Entry
	if ok && !prev.Negative && !prev.Large && prev.ETag() != "" {
		revalidate = prev
	}
	e, err := load(lctx, key, revalidate)
	now = c.now()
	switch {
	case err == nil:
		c.store(key, e, now)
		return result{e, Miss}, nil
	case errors.Is(err, ErrNotModified) && revalidate != nil:
		// A new entry: readers may hold the old one.
		fresh := revalidate.renewed()
		c.store(key, fresh, now)
		return result{fresh, Hit}, nil
	case errors.Is(err, ErrNotFound):
		neg := &Entry{Negative: true}
		neg.render("", "", "")
		if c.cfg.NegativeTTL > 0 {
			c.store(key, neg, now)
		} else {
			c.remove(key)
		}
		return result{neg, Miss}, err
	}
	if ok && !prev.Negative && !prev.Large && now.Sub(prev.stored) < c.cfg.TTL+c.cfg.StaleIfError {
		return result{prev, Stale}, nil
	}
	return result{}, err
}

func (c *Cache) fresh(e *Entry, now time.Time) bool {
	ttl := c.cfg.TTL
	if e.Negative {
		ttl = c.cfg.NegativeTTL
	}
	return now.Sub(e.stored) < ttl
}

// Recency is exact while the cache is small; in a large one, a hit on
// an entry that went to the front less than moveEvery ago leaves it where
// it is. Moving an entry writes the list links of it and its neighbours
// under the write lock, which with thousands of entries are cache misses
// on every hit; this way hits share a read lock and recency is still
// known to within moveEvery, far finer than any eviction needs.
const (
	exactBelow = 64
	moveEvery  = time.Second
)

// lookup finds key and, per the rule above, moves it to the front of the
// LRU: unlike the LRU's own Peek, it counts as a use.
func (c *Cache) lookup(key string, now time.Time) (*Entry, bool) {
	h := c.hash(key)
	c.mu.RLock()
	e, ok := c.lru.Peek(h)
	exact := c.lru.Len() < exactBelow
	c.mu.RUnlock()
	if !ok || e.key != key {
		return nil, false
	}
	t := now.UnixNano()
	if exact || t-atomic.LoadInt64(&e.moved) >= int64(moveEvery) {
		c.mu.Lock()
		if cur, ok := c.lru.Get(h); ok && cur == e {
			atomic.StoreInt64(&e.moved, t)
		}
		c.mu.Unlock()
	}
	return e, true
}

func (c *Cache) hash(key string) uint64 { return maphash.String(c.seed, key) }

// remove drops key's entry, if it is key's (see lru on collisions).
func (c *Cache) remove(key string) {
	h := c.hash(key)
	c.mu.Lock()
	if e, ok := c.lru.Peek(h); ok && e.key == key {
		c.lru.Remove(h)
	}
	bytes, objects := c.bytes, int64(c.lru.Len())
	c.mu.Unlock()
	c.changed(bytes, objects)
}

// RemoveIf drops every entry whose cache key ("bucket/key") drop
// accepts, and returns how many went: a configuration reload drops the
// tiles of tilesets it removed. It holds the write lock while it walks the
// entries, so it is for rare events, not the request path.
func (c *Cache) RemoveIf(drop func(key string) bool) int {
	n := 0
	c.mu.Lock()
	for _, h := range c.lru.Keys() {
		if e, ok := c.lru.Peek(h); ok && drop(e.key) {
			c.lru.Remove(h) // its bytes leave through the callback
			n++
		}
	}
	bytes, objects, fileBytes := c.bytes, int64(c.lru.Len()), c.fileBytes
	c.mu.Unlock()
	if c.files != nil && n > 0 {
		c.files.gc(fileBytes, c.fileSlack())
	}
	c.changed(bytes, objects)
	return n
}

// store adds e (stamped now) and evicts least-recently-used entries until
// the cache fits in max_bytes again. Bodies over max_object_bytes are never
// stored: only a Large marker is.
func (c *Cache) store(key string, e *Entry, now time.Time) {
	if int64(len(e.Body)) > c.cfg.MaxObjectBytes {
		e = NewLargeEntry()
	}
	e.stored = now
	e.moved = now.UnixNano() // not yet shared
	key = e.intern(key)
	if e.size > c.cfg.MaxBytes {
		c.remove(key)
		return
	}
	e.toFile(c.files)
	evicted := 0
	h := c.hash(key)
	c.mu.Lock()
	c.lru.Remove(h) // replace: its bytes leave through the callback
	c.lru.Add(h, e)
	c.bytes += e.size
	if e.file != nil {
		c.fileBytes += e.memory()
	}
	for c.bytes > c.cfg.MaxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
		evicted++
	}
	bytes, objects, fileBytes := c.bytes, int64(c.lru.Len()), c.fileBytes
	c.mu.Unlock()
	if c.files != nil { // evicted or replaced bodies may be waiting
		c.files.gc(fileBytes, c.fileSlack())
	}
	for range evicted {
		if c.deps.OnEvict != nil {
			c.deps.OnEvict()
		}
	}
	c.changed(bytes, objects)
}

// fileSlack is how much of the memory file may wait for the collector
// (evicted bodies, and bodies only requests in flight still hold) before
// the cache asks for a collection: an eighth of max_bytes, so the file
// stays within 1.125 max_bytes plus what is being sent.
func (c *Cache) fileSlack() int64 { return max(c.cfg.MaxBytes/8, 1<<20) }

func (c *Cache) changed(bytes, objects int64) {
	if c.deps.OnChange != nil {
		c.deps.OnChange(bytes, objects)
	}
}

// Len and Bytes report the current totals.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Bytes is the total size of the entries held.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
