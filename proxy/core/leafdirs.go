package core

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/internal/archive"
)

// maxLeafDirBytes bounds the decoded leaf directories one archive version
// keeps (outside cache.max_bytes: directories are the index, not tiles).
// At 24 bytes an entry it holds about 700,000 entries: every leaf of a
// planet-scale archive's busy zooms.
const maxLeafDirBytes = 16 << 20

// leafDir is one leaf directory, decoded, or why it could not be read
// (remembered until until).
type leafDir struct {
	entries []archive.EntryV3
	err     error
	until   time.Time
}

// entryBytes is the size of an archive.EntryV3: two uint64, two uint32.
const entryBytes = 24

func (d leafDir) bytes() int64 { return int64(len(d.entries))*entryBytes + 64 }

// leafDirs keeps one archive version's leaf directories by offset, the
// least recently used going first past maxLeafDirBytes, and coalesces
// their reads.
type leafDirs struct {
	flight singleflight.Group

	mu    sync.Mutex // protects lru and bytes; simplelru is not safe alone
	lru   *simplelru.LRU[uint64, leafDir]
	bytes int64
}

func newLeafDirs() *leafDirs {
	d := &leafDirs{}
	// Bounded by bytes, not count: the count limit is out of reach.
	d.lru, _ = simplelru.NewLRU[uint64, leafDir](1<<30, func(_ uint64, v leafDir) { d.bytes -= v.bytes() })
	return d
}

// get returns the directory at off, unless it is absent or a remembered
// failure that has expired.
func (d *leafDirs) get(off uint64, now time.Time) (leafDir, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.lru.Get(off)
	if ok && v.err != nil && !now.Before(v.until) {
		d.lru.Remove(off)
		return leafDir{}, false
	}
	return v, ok
}

// put keeps v for off.
func (d *leafDirs) put(off uint64, v leafDir) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lru.Remove(off) // a replaced value is counted out by the eviction callback
	d.lru.Add(off, v)
	d.bytes += v.bytes()
	for d.bytes > maxLeafDirBytes && d.lru.Len() > 1 {
		d.lru.RemoveOldest()
	}
}
