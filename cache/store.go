package cache

import (
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/tileproxy/tileproxy/cache/internal/arena"
)

// store is the cache's unlocked core, as simplelru is under golang-lru's
// locked Cache: the LRU of records by a hash of the key, the bytes they
// count against max_bytes, and the records that left it, whose holds
// Cache.unlock drops once the lock is released. It is not safe for
// concurrent use: Cache.mu guards every method (a read lock for find, the
// write lock for the rest).
type store struct {
	// lru maps a hash of the key to the entry's record: integers only, so
	// the LRU's map and list elements are all the collector visits per
	// entry. The record keeps the key: a lookup whose record has another
	// key (a 64-bit collision) is a miss, and storing it replaces that
	// entry.
	lru   *simplelru.LRU[uint64, uint32]
	recs  *slab
	arena *arena.Arena
	max   int64 // max_bytes
	bytes int64
	// gone collects entries that left lru, whose holds are dropped once
	// the lock is released: freeing pages is a system call, and hits
	// wait on the lock.
	gone []uint32

	// removed counts removeIf calls (written under the write lock, read
	// by loads as they start), and removals keeps the last few
	// predicates: a load that started before one does not store what
	// that one dropped (a reload's removed tileset, a replaced archive's
	// version), however late its origin answers.
	removed  atomic.Uint64
	removals [maxRemovals]func(key string) bool
}

// maxRemovals is how many removeIf predicates stores are checked against;
// a load older than that many removals is served but not stored.
const maxRemovals = 16

func newStore(recs *slab, a *arena.Arena, maxBytes int64) (*store, error) {
	s := &store{recs: recs, arena: a, max: maxBytes}
	// Entries are bounded by bytes, not count: the count limit is set out
	// of reach and eviction is driven by bytes in insert.
	l, err := simplelru.NewLRU[uint64, uint32](1<<30, func(_ uint64, i uint32) {
		s.bytes -= s.recs.at(i).size
		s.gone = append(s.gone, i)
	})
	if err != nil {
		return nil, err
	}
	s.lru = l
	return s, nil
}

// keyIs reports whether record r is key's.
func (s *store) keyIs(r *record, key string) bool {
	return int(r.keyLen) == len(key) && string(s.arena.Bytes(r.blob, int(r.keyLen))) == key
}

// find returns key's record, without counting a use (a read lock will do).
func (s *store) find(h uint64, key string) (uint32, *record, bool) {
	i, ok := s.lru.Peek(h)
	if !ok {
		return 0, nil, false
	}
	r := s.recs.at(i)
	return i, r, s.keyIs(r, key)
}

// touch moves h's entry to the front, if it is there and is record i
// (any record, with i < 0).
func (s *store) touch(h uint64, i int64) bool {
	cur, ok := s.lru.Get(h)
	return ok && (i < 0 || int64(cur) == i)
}

// insert adds record i, which holds the cache's hold, under h, replacing
// what was there, and evicts the least recently used until the store fits
// (beforeEvict runs first, once, when something must go). It drops the
// cache's hold instead, and reports false, when a removeIf since the load
// began (since) drops key.
func (s *store) insert(key string, h uint64, i uint32, r *record, since uint64, beforeEvict func()) (evicted int, ok bool) {
	if s.removedSince(since, key) {
		s.gone = append(s.gone, i)
		return 0, false
	}
	s.lru.Remove(h) // replace: its bytes leave through the callback
	s.lru.Add(h, i)
	s.bytes += r.size
	if s.bytes > s.max {
		beforeEvict()
	}
	for s.bytes > s.max {
		if _, _, ok := s.lru.RemoveOldest(); !ok {
			break
		}
		evicted++
	}
	return evicted, true
}

// remove drops key's entry, if it is key's.
func (s *store) remove(h uint64, key string) {
	if _, _, ok := s.find(h, key); ok {
		s.lru.Remove(h)
	}
}

// removeIf drops every entry whose key drop accepts, remembers drop for
// the loads in flight, and returns how many went.
func (s *store) removeIf(drop func(key string) bool) int {
	n := 0
	for _, h := range s.lru.Keys() {
		i, _ := s.lru.Peek(h)
		r := s.recs.at(i)
		if drop(string(s.arena.Bytes(r.blob, int(r.keyLen)))) {
			s.lru.Remove(h) // its bytes leave through the callback
			n++
		}
	}
	s.removals[s.removed.Load()%maxRemovals] = drop
	s.removed.Add(1)
	return n
}

// removedSince reports whether a removeIf after the since'th drops key;
// beyond the predicates kept, it says yes (the load is that old).
func (s *store) removedSince(since uint64, key string) bool {
	now := s.removed.Load()
	if now-since > maxRemovals {
		return true
	}
	for n := since; n < now; n++ {
		if s.removals[n%maxRemovals](key) {
			return true
		}
	}
	return false
}

// totals are the bytes and entries held.
func (s *store) totals() (bytes, objects int64) { return s.bytes, int64(s.lru.Len()) }

// takeGone returns the records that left since the last call.
func (s *store) takeGone() []uint32 {
	g := s.gone
	s.gone = nil
	return g
}
