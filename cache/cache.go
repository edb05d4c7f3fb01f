// Package cache keeps hot tiles in memory: an LRU bounded by bytes, with a
// freshness TTL, revalidation, remembered misses, stale-if-error, and one
// origin fetch per key however many requests miss at once.
//
// What it keeps is outside the Go heap's scanned objects, so that a
// million cached tiles do not lengthen every garbage collection (see
// record): per entry a pointer-free record in a slab, its key and header
// text and a small body in an arena (cache/internal/arena), and on Linux a
// body of 8 KiB or more in an anonymous memory file, so that hits can send
// it with sendfile (cache/internal/memfile).
//
// As golang-lru keeps a locked Cache over simplelru, Cache (this file:
// the lock, the flights, loads and their policy) is a shell over store
// (store.go: the LRU and its accounting, unlocked), with recency (batched
// LRU moves) and Entry (a held entry, and the header text copied out of
// it) beside it.
//
// The cache knows keys and bytes, never users or tokens: callers decide
// authorization before they look anything up.
package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/cache/internal/arena"
	"github.com/tileproxy/tileproxy/cache/internal/memfile"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/workers"
)

// Sentinels a LoadFunc returns (wrapped is fine) to steer the cache.
var (
	// ErrNotFound: the object does not exist; remembered for NegativeTTL.
	ErrNotFound = errors.New("cache: not found")
	// ErrNotModified: revalidation found the cached copy current.
	ErrNotModified = errors.New("cache: not modified")
)

// Bodies of fileMin bytes or more are kept in the memory file rather
// than in the arena, so a hit can hand the kernel the file's pages with
// sendfile (coalesce.ReadFrom) instead of having it copy the body from
// user memory (bench/results/history-to-2026-12-02.md has the measurement). Below it a body is
// no more than the one write it already shares with the header, and a
// page of file would mostly be waste.
const fileMin = 8 << 10

// entryOverhead is the heap an entry takes besides its text and body: its
// record in the slab, the LRU's list element and map slot. It is counted
// so that many tiny entries (remembered misses, say) cannot exceed
// max_bytes by hiding in overhead; TestOverheadCounted holds it to the heap.
const entryOverhead = 256

// maxText is the longest header value or key an entry keeps (lengths are
// 16-bit); an object with a longer one is streamed, not cached.
const maxText = 1<<16 - 1

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
	// PoisonFreed overwrites an entry's text and small body when its
	// last hold goes, so that anything still reading them after Release
	// reads garbage at once instead of, rarely, another tile's bytes.
	// For tests.
	PoisonFreed bool
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
	// memory files, and then bodies up to arena.MaxBlock are kept in the
	// arena and larger ones streamed.
	files *memfile.File
	// arena holds every entry's key and header text and small bodies.
	arena *arena.Arena
	recs  slab
	// misuses counts releases of entries not held: always 0 unless a
	// caller has a bug. Tests assert it.
	misuses atomic.Int64

	seed maphash.Seed
	// mu guards st, the unlocked store: a read lock for lookups, the
	// write lock for every change.
	mu sync.RWMutex
	st *store
	// recent holds the LRU moves hits asked for (see recency).
	recent recency
	// workers run the loads, on goroutines whose stacks stay grown: an
	// origin fetch through the AWS SDK runs a deep middleware stack.
	workers *workers.Pool
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
	c := &Cache{cfg: cfg, now: deps.Now, flight: deps.Flight, deps: deps, seed: maphash.MakeSeed(), arena: arena.New(),
		workers: workers.New(workerIdle, 0)}
	if files, err := memfile.New("tileproxy-cache"); err == nil {
		c.files = files
	}
	var err error
	if c.st, err = newStore(&c.recs, c.arena, cfg.MaxBytes); err != nil {
		return nil, err
	}
	return c, nil
}

// unlock releases mu and then the cache's holds on the entries that left
// while it was held.
func (c *Cache) unlock() {
	gone := c.st.takeGone()
	c.mu.Unlock()
	for _, i := range gone {
		c.release(i, c.recs.at(i))
	}
}

// release drops one hold on record i; the last frees its memory and the
// record.
func (c *Cache) release(i uint32, r *record) {
	s := r.state.Add(^uint64(0))
	switch holds := uint32(s); {
	case holds == 0:
	case holds == ^uint32(0):
		// A release without a hold is a bug in the caller. Undo it and
		// count it, for tests to assert on, rather than take the server
		// down.
		r.state.Add(1)
		c.misuses.Add(1)
		return
	default:
		return
	}
	// Nobody can take a hold now (acquire needs one there): free.
	if c.deps.PoisonFreed {
		b := c.arena.Bytes(r.blob, int(r.blobLen))
		for j := range b {
			b[j] = '?'
		}
	}
	c.arena.Free(r.blob)
	if r.is(fFile) {
		c.files.Free(r.file)
	}
	r.state.Store(s + 1<<32) // the next generation, no holds
	c.recs.put(i)
}

// Close gives back the memory the cache holds outside the heap. Nothing
// may use the cache, or an entry from it, afterwards; a server exiting
// need not call it.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.st.lru.Purge()
	c.st.takeGone()
	err := c.arena.Close()
	if c.files != nil {
		err = errors.Join(err, c.files.Close())
	}
	return err
}

// FileBacked reports whether large bodies go to a memory file, to be sent
// with sendfile; otherwise they are in the arena, or streamed when over
// arena.MaxBlock.
func (c *Cache) FileBacked() bool { return c.files != nil }

// OffHeapBytes is the memory the cache takes outside the Go heap: the
// memory file and the arena, with the entries that left the cache while
// requests still send them.
func (c *Cache) OffHeapBytes() int64 {
	n := c.arena.Size()
	if c.files != nil {
		n += c.files.Allocated()
	}
	return n
}

// MaxObjectBytes is the largest body the cache keeps.
func (c *Cache) MaxObjectBytes() int64 { return c.cfg.MaxObjectBytes }

// Config is the configuration the cache was built with: the one owner of
// the cache settings, which a reload does not change.
func (c *Cache) Config() Config { return c.cfg }

// workerIdle is how long a load worker stays for the next miss.
const workerIdle = 10 * time.Second

// maxAcquireTries bounds how often Get looks again for an entry that left
// the cache between its load and the waiter's hold (evicted at once by a
// flood of other stores): a handful of tries, then an error.
const maxAcquireTries = 4

// ErrChurn: the cache kept evicting the entry before the caller could
// hold it; only under a flood of stores far beyond max_bytes.
var ErrChurn = errors.New("cache: entry evicted before it could be read")

// Get returns the entry for key, loading it with load on a miss or after
// its TTL, held for the caller: call Release on it once done. A negative
// entry comes back as ErrNotFound with outcome Negative. A caller whose
// ctx ends stops waiting; the shared load goes on for the others and
// still fills the cache.
func (c *Cache) Get(ctx context.Context, key string, load LoadFunc) (Entry, Outcome, error) {
	for range maxAcquireTries {
		now := c.now()
		e, ok := c.lookup(key, now)
		if ok && c.fresh(e.rec(), now) {
			if e.negative {
				e.Release()
				return Entry{}, Negative, ErrNotFound
			}
			return e, Hit, nil
		}
		if ok {
			e.Release() // the flight looks again itself
		}
		if err := ctx.Err(); err != nil {
			return Entry{}, Miss, err // gone already: start no load for it
		}
		ch := c.flight.DoChan(key, func() (any, error) {
			// On a worker whose stack is grown (internal/workers); the
			// flight's own goroutine only waits.
			var res result
			var err error
			done := make(chan struct{})
			c.workers.Run(func() {
				defer close(done)
				res, err = c.load(ctx, key, load)
			})
			<-done
			return res, err
		})
		var r singleflight.Result
		select {
		case <-ctx.Done():
			return Entry{}, Miss, ctx.Err()
		case r = <-ch:
		}
		if r.Err != nil {
			return Entry{}, Miss, r.Err
		}
		res := r.Val.(result)
		switch {
		case res.negative:
			return Entry{}, res.outcome, ErrNotFound
		case res.large:
			return Entry{large: true}, res.outcome, nil
		case res.unstored != nil:
			return *res.unstored, res.outcome, nil
		}
		// The flight holds nothing for its waiters (it cannot know how
		// many there are): each takes its own hold, which fails only if
		// the entry has left the cache and its last reader is done.
		if r := c.recs.at(res.idx); r.acquire(res.gen) {
			return c.entry(res.idx, r), res.outcome, nil
		}
	}
	return Entry{}, Miss, ErrChurn
}

// result is a flight's answer: a cached record by index and generation,
// or the fact of a large or missing object, or an entry too large to
// keep (its body on the heap).
type result struct {
	idx, gen        uint32
	large, negative bool
	unstored        *Entry
	outcome         Outcome
}

func resultOf(e *Entry, out Outcome) result {
	return result{idx: e.h.idx, gen: e.rec().gen(), large: e.large, negative: e.negative, outcome: out}
}

// load runs once per key at a time (inside the flight). It returns an
// entry it holds no more: Get's waiters each take their own hold.
func (c *Cache) load(ctx context.Context, key string, load LoadFunc) (result, error) {
	since := c.st.removed.Load()
	// Another flight may have filled the entry between our look and now.
	now := c.now()
	prev, ok := c.lookup(key, now)
	if ok {
		defer prev.Release()
		if c.fresh(prev.rec(), now) {
			if prev.negative {
				return resultOf(&prev, Negative), nil
			}
			return resultOf(&prev, Hit), nil
		}
	}
	// Detached: the first caller leaving must not fail everyone else.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.LoadTimeout)
	defer cancel()
	var revalidate *Entry
	if ok && !prev.negative && !prev.large && prev.meta.ETag != "" {
		revalidate = &prev
	}
	e, err := load(lctx, key, revalidate)
	now = c.now()
	switch {
	case err == nil:
		return c.keep(key, e, now, since), nil
	case errors.Is(err, ErrNotModified) && revalidate != nil:
		c.renew(key, &prev, now, since)
		return resultOf(&prev, Hit), nil
	case errors.Is(err, ErrNotFound):
		if c.cfg.NegativeTTL > 0 {
			c.keep(key, &Entry{negative: true}, now, since)
		} else {
			c.remove(key)
		}
		return result{negative: true, outcome: Miss}, err
	}
	if ok && !prev.negative && !prev.large && now.Sub(time.Unix(0, prev.rec().stored.Load())) < c.cfg.TTL+c.cfg.StaleIfError {
		return resultOf(&prev, Stale), nil
	}
	return result{}, err
}

func (c *Cache) fresh(r *record, now time.Time) bool {
	ttl := c.cfg.TTL
	if r.is(fNegative) {
		ttl = c.cfg.NegativeTTL
	}
	return now.UnixNano()-r.stored.Load() < int64(ttl)
}

// lookup finds key, holds it for the caller (who must Release it) and,
// per the rule above, moves it to the front of the LRU: unlike the LRU's
// own Peek, it counts as a use. The hold is taken under the read lock,
// while the cache's own hold is certain to be there, so it cannot fail.
func (c *Cache) lookup(key string, now time.Time) (Entry, bool) {
	h := c.hash(key)
	c.mu.RLock()
	i, r, ok := c.st.find(h, key)
	if ok {
		r.hold()
	}
	exact := c.st.lru.Len() < exactBelow
	c.mu.RUnlock()
	if !ok {
		return Entry{}, false
	}
	t := now.UnixNano()
	switch {
	case exact:
		c.mu.Lock()
		if c.st.touch(h, int64(i)) {
			r.moved.Store(t)
		}
		c.mu.Unlock()
	case t-r.moved.Load() >= int64(moveEvery):
		r.moved.Store(t)
		if batch, full := c.recent.note(h); full {
			c.mu.Lock()
			for _, h := range batch {
				c.st.touch(h, -1) // moves it, if it is still there
			}
			c.mu.Unlock()
		}
	}
	return c.entry(i, r), true
}

func (c *Cache) hash(key string) uint64 { return maphash.String(c.seed, key) }

// remove drops key's entry, if it is key's (see lru on collisions).
func (c *Cache) remove(key string) {
	c.mu.Lock()
	c.st.remove(c.hash(key), key)
	bytes, objects := c.st.totals()
	c.unlock()
	c.changed(bytes, objects)
}

// RemoveIf drops every entry whose cache key ("bucket/key") drop
// accepts, and returns how many went: a configuration reload drops the
// tiles of tilesets it removed. It holds the write lock while it walks the
// entries, so it is for rare events, not the request path.
func (c *Cache) RemoveIf(drop func(key string) bool) int {
	c.mu.Lock()
	n := c.st.removeIf(drop)
	bytes, objects := c.st.totals()
	c.unlock()
	c.changed(bytes, objects)
	return n
}

// keep stores the loaded entry e (stamped now) and evicts
// least-recently-used entries until the cache fits in max_bytes again.
// Bodies over max_object_bytes are never stored: only a Large marker
// is. Nor is anything a RemoveIf after since (the load's start) drops.
// It returns what the flight's waiters read: the stored record, or e
// itself when it cannot be kept.
func (c *Cache) keep(key string, e *Entry, now time.Time, since uint64) result {
	m := e.meta
	var vals [5]string
	for j, f := range m.fields() {
		vals[j] = *f
	}
	large := e.large || int64(len(e.body)) > c.cfg.MaxObjectBytes
	for _, v := range vals {
		large = large || len(v) > maxText
	}
	body := e.body
	if large || e.negative {
		// Only the fact is kept, under the key.
		body, vals = nil, [5]string{}
	}
	inFile := len(body) >= fileMin && c.files != nil
	blobLen := len(key)
	for _, v := range vals {
		blobLen += len(v)
	}
	if !inFile {
		blobLen += len(body)
	}
	if blobLen > arena.MaxBlock && body != nil {
		// No memory file here, and too big for the arena: stream it.
		return c.keep(key, NewLargeEntry(), now, since)
	}
	size := int64(entryOverhead + arena.ClassSize(blobLen))
	if inFile {
		size += memfile.RoundPage(int64(len(body)))
	}
	unstored := result{unstored: e, large: e.large, negative: e.negative, outcome: Miss}
	if size > c.cfg.MaxBytes || len(key) > maxText {
		c.remove(key)
		return unstored
	}
	ref, blob, err := c.arena.Alloc(blobLen)
	if err != nil {
		return unstored // served once, from the heap
	}
	var file memfile.Span
	if inFile {
		if file, err = c.files.Put(body); err != nil {
			c.arena.Free(ref)
			return unstored
		}
	}
	p := copy(blob, key)
	for _, v := range vals {
		p += copy(blob[p:], v)
	}
	if !inFile {
		copy(blob[p:], body)
	}

	i, r := c.recs.alloc()
	// Field by field: state may be read (by a flight's stale reference)
	// at any time, so it is only ever written atomically.
	gen := r.state.Load() >> 32
	r.size, r.file, r.blob, r.blobLen, r.keyLen, r.mod, r.flags = size, file, ref, uint32(blobLen), uint16(len(key)), 0, 0
	for j, v := range vals {
		r.lens[j] = uint16(len(v))
	}
	switch {
	case large:
		r.flags |= fLarge
	case e.negative:
		r.flags |= fNegative
	}
	if inFile {
		r.flags |= fFile
	}
	if !m.Modified.IsZero() && !large && !e.negative {
		r.flags |= fHasMod
		r.mod = m.Modified.UnixNano()
	}
	r.stored.Store(now.UnixNano())
	r.moved.Store(now.UnixNano())
	r.state.Store(gen<<32 | 1) // the cache's hold
	if !c.insert(key, c.hash(key), i, r, since) {
		return unstored
	}
	if large && !e.large {
		// This request has the body already: it gets it; later ones
		// stream.
		return result{unstored: e, outcome: Miss}
	}
	return result{idx: i, gen: uint32(gen), large: large, negative: e.negative, outcome: Miss}
}

// renew marks prev, which the caller holds, as revalidated now: its
// record is current again and goes to the front of the LRU, or back into
// the cache if it left while the origin was asked.
func (c *Cache) renew(key string, prev *Entry, now time.Time, since uint64) {
	r := prev.rec()
	r.stored.Store(now.UnixNano())
	r.moved.Store(now.UnixNano())
	h := c.hash(key)
	c.mu.Lock()
	if c.st.touch(h, int64(prev.h.idx)) {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	r.hold() // the cache's new hold; the caller's keeps r alive till here
	c.insert(key, h, prev.h.idx, r, since)
}

// insert adds record i (held for the cache) under h and evicts until the
// cache fits; false when a RemoveIf since the load began drops key.
func (c *Cache) insert(key string, h uint64, i uint32, r *record, since uint64) bool {
	c.mu.Lock()
	evicted, ok := c.st.insert(key, h, i, r, since, func() {
		c.recent.drain(func(h uint64) { c.st.touch(h, -1) })
	})
	bytes, objects := c.st.totals()
	c.unlock()
	for range evicted {
		if c.deps.OnEvict != nil {
			c.deps.OnEvict()
		}
	}
	if ok {
		c.changed(bytes, objects)
	}
	return ok
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
	return c.st.lru.Len()
}

// Bytes is the total size of the entries held.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.bytes
}
