package cache

import (
	"sync"
	"sync/atomic"

	"github.com/tileproxy/tileproxy/cache/internal/arena"
	"github.com/tileproxy/tileproxy/cache/internal/memfile"
)

// record is what the cache keeps per entry, and it holds no pointers:
// records live in slab chunks the collector does not scan, the key and
// header text (and a small body) in the arena, a large body in the memory
// file. What the collector still visits per entry is the LRU's list
// element and map slot (golang-lru's own), about a fifth of what an entry
// of Go objects cost it (BenchmarkGCMark).
//
// A record is written once before it is shared; after that only state,
// moved and stored change, atomically.
type record struct {
	// state is the generation (high 32 bits) and the number of holds:
	// the cache's while the entry is in the LRU, and one per reader. The
	// last release frees the record's memory and moves the generation
	// on, so a stale reference (a flight's result) cannot take a hold on
	// the slot's next entry.
	state atomic.Uint64
	// moved is when the entry last went to the front of the LRU list
	// (Unix ns; hits read it under the read lock).
	moved atomic.Int64
	// stored is when it was fetched or last revalidated (Unix ns).
	stored atomic.Int64
	size   int64 // what the entry counts against max_bytes
	mod    int64 // Meta.Modified, Unix ns (when hasMod)
	file   memfile.Span
	blob   arena.Ref // key, header text and a small body
	// blobLen is the blob's length; keyLen and lens the key's and each
	// header value's (ContentType, ContentEncoding, ETag, LastModified,
	// ContentLength), in that order, from the blob's start.
	blobLen uint32
	keyLen  uint16
	lens    [5]uint16
	flags   uint8
}

const (
	fLarge uint8 = 1 << iota
	fNegative
	fFile
	fHasMod
)

func (r *record) is(f uint8) bool { return r.flags&f != 0 }

// gen is the record's generation while the caller holds it.
func (r *record) gen() uint32 { return uint32(r.state.Load() >> 32) }

// hold takes a hold on a record someone is known to hold (the cache,
// while under its lock).
func (r *record) hold() { r.state.Add(1) }

// acquire takes a hold unless the record of generation gen has been freed.
func (r *record) acquire(gen uint32) bool {
	for {
		s := r.state.Load()
		if uint32(s>>32) != gen || uint32(s) == 0 {
			return false
		}
		if r.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// chunkLen is records per slab chunk: 4,096 of ~100 bytes.
const chunkLen = 4096

type chunk [chunkLen]record

// slab hands out records by index. Chunks never move, so a *record stays
// valid; the chunk list is copied when it grows, so readers load it
// without a lock.
type slab struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*chunk]
	free   []uint32
	next   uint32 // the first index never handed out
}

func (s *slab) at(i uint32) *record { return &(*s.chunks.Load())[i/chunkLen][i%chunkLen] }

// alloc returns a free record, its generation kept and everything else
// zero.
func (s *slab) alloc() (uint32, *record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.free); n > 0 {
		i := s.free[n-1]
		s.free = s.free[:n-1]
		return i, s.at(i)
	}
	i := s.next
	if cur := s.chunks.Load(); cur == nil || int(i/chunkLen) >= len(*cur) {
		var grown []*chunk
		if cur != nil {
			grown = append(grown, *cur...)
		}
		grown = append(grown, new(chunk))
		s.chunks.Store(&grown)
	}
	s.next++
	return i, s.at(i)
}

// put returns record i, whose memory is already freed, for reuse.
func (s *slab) put(i uint32) {
	s.mu.Lock()
	s.free = append(s.free, i)
	s.mu.Unlock()
}
