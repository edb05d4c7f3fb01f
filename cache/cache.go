// Package cache keeps hot tiles in memory: an LRU bounded by bytes, with a
// freshness TTL, revalidation, remembered misses, stale-if-error, and one
// origin fetch per key however many requests miss at once. On Linux,
// bodies of 8 KiB and more are kept in an anonymous memory file, so that
// hits can send them with sendfile (see Entry and internal/memfile).
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/memfile"
)

// Sentinels a LoadFunc returns (wrapped is fine) to steer the cache.
var (
	// ErrNotFound: the object does not exist; remembered for NegativeTTL.
	ErrNotFound = errors.New("cache: not found")
	// ErrNotModified: revalidation found the cached copy current.
	ErrNotModified = errors.New("cache: not modified")
)

// Bodies of fileMin bytes or more are kept in the memory file rather
// than on the Go heap, so a hit can hand the kernel the file's pages with
// sendfile (coalesce.ReadFrom) instead of having it copy the body from
// user memory (bench/README.md has the measurement). Below it a body is
// no more than the one write it already shares with the header, and a
// page of file would mostly be waste.
const fileMin = 8 << 10

// entryOverhead is the memory an entry takes besides its body and
// metadata text: the Entry, the LRU's list element and map slot. It is
// counted so that many tiny entries (remembered misses, say) cannot exceed
// max_bytes by hiding in overhead; TestOverheadCounted holds it to the heap.
const entryOverhead = 400

// Meta is what the cache keeps of an object besides its body. The values
// are header text, rendered once by whoever built the entry (the tile
// core), so that a hit formats nothing; the cache itself reads only ETag,
// to revalidate with. Strings are immutable, so handing Meta out by value
// lets nobody write into the cache.
type Meta struct {
	ContentType     string
	ContentEncoding string
	ETag            string
	// LastModified is the Last-Modified header value, "" when unknown.
	LastModified string
	// ContentLength is the body's length as header text.
	ContentLength string
	// Modified is LastModified as a time, for conditional requests.
	Modified time.Time
}

// Entry is a cached object. It is immutable once stored (revalidation
// stores a new Entry rather than touching one that readers may hold),
// except for the cache's own LRU bookkeeping, written atomically.
//
// A body of fileMin bytes or more lives in the cache's memory file
// (internal/memfile), whose pages are reference-counted: every Entry that
// Get returns is held for its caller, who must call Release once done
// with the body; the cache holds each entry it keeps, and drops that hold
// when the entry leaves (eviction, replacement, removal). The last
// release frees the pages at once. Heap bodies need no holds, but the
// same calls work for them.
//
// Every cached entry is visited by the collector on every cycle, as is
// every pointer in it; a cycle's length is what requests in flight wait
// through. BenchmarkGCMark measures the cost per entry.
type Entry struct {
	// moved is when the entry last went to the front of the LRU list
	// (Unix ns, read and written atomically: hits read it under RLock).
	moved  int64
	stored time.Time // when fetched or last revalidated
	size   int64     // what the entry counts against max_bytes
	key    string    // the LRU is keyed by its hash, so a lookup checks it
	meta   Meta
	body   []byte         // the body when on the heap
	block  *memfile.Block // the body when in the memory file
	// large marks an object over max_object_bytes: nothing is cached but
	// the fact, so later requests stream it straight away.
	large bool
	// negative marks a remembered miss.
	negative bool
}

// NewEntry builds an Entry for an object body and its metadata. The
// entry owns body from now on: the caller must not change it.
func NewEntry(body []byte, meta Meta) *Entry {
	return &Entry{body: body, meta: meta}
}

// NewLargeEntry marks an object too large to cache, without its body.
func NewLargeEntry() *Entry { return &Entry{large: true} }

// Meta is the object's metadata.
func (e *Entry) Meta() Meta { return e.meta }

// Large reports an object over max_object_bytes, whose body is not kept.
func (e *Entry) Large() bool { return e.large }

// Len is the body's length.
func (e *Entry) Len() int64 {
	if e.block != nil {
		return e.block.Len()
	}
	return int64(len(e.body))
}

// InFile reports a body kept in the memory file, which WriteTo sends
// with sendfile when w can.
func (e *Entry) InFile() bool { return e.block != nil }

// WriteTo writes the body to w: from the heap in one Write, from the
// memory file through w's ReadFrom when it has one (sendfile). As with
// groupcache's ByteView, the heap bytes are handed to w, which must not
// change them (no io.Writer may).
func (e *Entry) WriteTo(w io.Writer) (int64, error) {
	if e.block == nil {
		n, err := w.Write(e.body)
		return int64(n), err
	}
	return io.Copy(w, e.block.Section())
}

// NewRangeReader reads n bytes of the body from off (a Range answer),
// wherever it is kept; a memory-file section still goes out with
// sendfile. Read it only until Release.
func (e *Entry) NewRangeReader(off, n int64) *io.SectionReader {
	if e.block != nil {
		return e.block.SectionAt(off, n)
	}
	return io.NewSectionReader(bytes.NewReader(e.body), off, n)
}

// Release drops the caller's hold on the entry's body (see Entry). Call
// it exactly once for every entry Get returned, after the last read.
func (e *Entry) Release() {
	if e != nil && e.block != nil {
		e.block.Release()
	}
}

// acquire takes a hold for a reader; false when the body is already gone
// (possible only for an entry no longer cached).
func (e *Entry) acquire() bool { return e.block == nil || e.block.TryAcquire() }

// renewed is a copy of e for a revalidation that found it current: the
// same body under a new Entry (readers may hold e). The copy takes its
// own hold on a file body; the caller holds e, so that cannot fail.
func (e *Entry) renewed() *Entry {
	f := &Entry{body: e.body, block: e.block, meta: e.meta}
	if f.block != nil && !f.block.TryAcquire() {
		f.block = nil // unreachable: e is held
	}
	return f
}

// memory is what the body takes: a file body takes whole pages.
func (e *Entry) memory() int64 {
	if e.block != nil {
		return e.block.Memory()
	}
	return int64(len(e.body))
}

// account sets size, before the entry is shared.
func (e *Entry) account() {
	m := e.meta
	e.size = e.memory() + entryOverhead + int64(len(e.key)+len(m.ContentType)+len(m.ContentEncoding)+
		len(m.ETag)+len(m.LastModified)+len(m.ContentLength))
}

// toFile moves the body into f, unless it is small or cannot go; called
// before e is shared. The block's first hold is the cache's.
func (e *Entry) toFile(f *memfile.File) {
	if f == nil || e.block != nil || len(e.body) < fileMin {
		return
	}
	b, err := f.Put(e.body)
	if err != nil {
		return // stays on the heap, which works as well
	}
	e.block, e.body = b, nil
}

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

	// files holds large bodies (see Entry); nil where the system has no
	// memory files, and then every body is on the heap.
	files *memfile.File

	mu sync.RWMutex // protects lru, bytes, fileBytes and gone; simplelru is not safe alone
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
	// gone collects entries that left lru under mu, whose holds are
	// dropped once mu is released: freeing pages is a system call, and
	// hits wait on mu.
	gone []*Entry
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
	if files, err := memfile.New("tileproxy-cache"); err == nil {
		c.files = files
	}
	// Entries are bounded by bytes, not count: the count limit is set out
	// of reach and eviction is driven by c.bytes in store.
	l, err := simplelru.NewLRU[uint64, *Entry](1<<30, func(_ uint64, e *Entry) {
		c.bytes -= e.size
		if e.block != nil {
			c.fileBytes -= e.memory()
		}
		c.gone = append(c.gone, e)
	})
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
}

// unlock releases mu and then the cache's holds on the entries that left
// while it was held.
func (c *Cache) unlock() {
	gone := c.gone
	c.gone = nil
	c.mu.Unlock()
	for i, e := range gone {
		e.Release()
		gone[i] = nil
	}
}

// FileBacked reports whether large bodies go to a memory file, to be sent
// with sendfile; otherwise they are on the heap.
func (c *Cache) FileBacked() bool { return c.files != nil }

// FileBytes is the memory the memory file takes: the bodies of cached
// entries, and those that left the cache while requests still send them.
func (c *Cache) FileBytes() int64 {
	if c.files == nil {
		return 0
	}
	return c.files.Allocated()
}

// MaxObjectBytes is the largest body the cache keeps.
func (c *Cache) MaxObjectBytes() int64 { return c.cfg.MaxObjectBytes }

// maxAcquireTries bounds how often Get looks again for an entry whose
// body was freed between its load and the waiter's hold (evicted at once
// by a flood of other stores): a handful of tries, then an error.
const maxAcquireTries = 4

// ErrChurn: the cache kept evicting the entry before the caller could
// hold it; only under a flood of stores far beyond max_bytes.
var ErrChurn = errors.New("cache: entry evicted before it could be read")

// Get returns the entry for key, loading it with load on a miss or after
// its TTL, held for the caller: call Release on it once done. A negative
// entry comes back as ErrNotFound with outcome Negative. A caller whose
// ctx ends stops waiting; the shared load goes on for the others and
// still fills the cache.
func (c *Cache) Get(ctx context.Context, key string, load LoadFunc) (*Entry, Outcome, error) {
	for range maxAcquireTries {
		now := c.now()
		e, ok := c.lookup(key, now)
		if ok && c.fresh(e, now) {
			if e.negative {
				e.Release()
				return nil, Negative, ErrNotFound
			}
			return e, Hit, nil
		}
		if ok {
			e.Release() // the flight looks again itself
		}
		ch := c.flight.DoChan(key, func() (any, error) { return c.load(ctx, key, load) })
		var r singleflight.Result
		select {
		case <-ctx.Done():
			return nil, Miss, ctx.Err()
		case r = <-ch:
		}
		if r.Err != nil {
			return nil, Miss, r.Err
		}
		res := r.Val.(result)
		if res.entry.negative {
			return nil, res.outcome, ErrNotFound
		}
		// The flight holds nothing for its waiters (it cannot know how
		// many there are): each takes its own hold, which fails only if
		// the entry has left the cache and its last reader is done.
		if res.entry.acquire() {
			return res.entry, res.outcome, nil
		}
	}
	return nil, Miss, ErrChurn
}

type result struct {
	entry   *Entry
	outcome Outcome
}

// load runs once per key at a time (inside the flight). It returns an
// entry it holds no more: Get's waiters each take their own hold.
func (c *Cache) load(ctx context.Context, key string, load LoadFunc) (result, error) {
	// Another flight may have filled the entry between our look and now.
	now := c.now()
	prev, ok := c.lookup(key, now)
	if ok {
		defer prev.Release()
		if c.fresh(prev, now) {
			if prev.negative {
				return result{prev, Negative}, nil
			}
			return result{prev, Hit}, nil
		}
	}
	// Detached: the first caller leaving must not fail everyone else.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
	defer cancel()
	var revalidate *Entry
	if ok && !prev.negative && !prev.large && prev.meta.ETag != "" {
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
		neg := &Entry{negative: true}
		if c.cfg.NegativeTTL > 0 {
			c.store(key, neg, now)
		} else {
			c.remove(key)
		}
		return result{neg, Miss}, err
	}
	if ok && !prev.negative && !prev.large && now.Sub(prev.stored) < c.cfg.TTL+c.cfg.StaleIfError {
		return result{prev, Stale}, nil
	}
	return result{}, err
}

func (c *Cache) fresh(e *Entry, now time.Time) bool {
	ttl := c.cfg.TTL
	if e.negative {
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

// lookup finds key, holds it for the caller (who must Release it) and,
// per the rule above, moves it to the front of the LRU: unlike the LRU's
// own Peek, it counts as a use. The hold is taken under the read lock,
// while the cache's own hold is certain to be there, so it cannot fail.
func (c *Cache) lookup(key string, now time.Time) (*Entry, bool) {
	h := c.hash(key)
	c.mu.RLock()
	e, ok := c.lru.Peek(h)
	ok = ok && e.key == key && e.acquire()
	exact := c.lru.Len() < exactBelow
	c.mu.RUnlock()
	if !ok {
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
	c.unlock()
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
	bytes, objects := c.bytes, int64(c.lru.Len())
	c.unlock()
	c.changed(bytes, objects)
	return n
}

// store adds e (stamped now) and evicts least-recently-used entries until
// the cache fits in max_bytes again. Bodies over max_object_bytes are never
// stored: only a Large marker is. The cache's hold on e is the one e was
// made with (toFile's, or renewed's).
func (c *Cache) store(key string, e *Entry, now time.Time) {
	if int64(len(e.body)) > c.cfg.MaxObjectBytes {
		e = NewLargeEntry()
	}
	e.stored = now
	e.moved = now.UnixNano() // not yet shared
	e.key = key
	e.account()
	if e.size > c.cfg.MaxBytes {
		c.remove(key)
		e.Release() // no cache hold to keep
		return
	}
	e.toFile(c.files)
	e.account() // a file body takes whole pages
	evicted := 0
	h := c.hash(key)
	c.mu.Lock()
	c.lru.Remove(h) // replace: its bytes leave through the callback
	c.lru.Add(h, e)
	c.bytes += e.size
	if e.block != nil {
		c.fileBytes += e.memory()
	}
	for c.bytes > c.cfg.MaxBytes {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
		evicted++
	}
	bytes, objects := c.bytes, int64(c.lru.Len())
	c.unlock()
	for range evicted {
		if c.deps.OnEvict != nil {
			c.deps.OnEvict()
		}
	}
	c.changed(bytes, objects)
}

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
