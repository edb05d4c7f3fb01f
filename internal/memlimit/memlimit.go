// Package memlimit sets the Go runtime's soft memory limit and GC percent
// from the cache's size, and keeps the limit beside the cache's memory
// file as it grows and shrinks. It is process policy: tileproxy serve
// calls it once; libraries and tests leave the runtime alone.
package memlimit

import (
	"os"
	"runtime/debug"
	"sync/atomic"
)

// GCPercent is the GC percent used when the limit is set and GOGC is not.
// With the limit in place the heap may grow to five times its live data
// (never past the limit) before a collection, instead of twice; fewer
// (800, 1600) or more (100, 200) collections both made the tail worse
// (bench/results/history-to-2026-12-02.md), so 400 stays.
const GCPercent = 400

// Limit keeps the soft memory limit at Base less what the cache's memory
// file holds. It moves only when the file has changed by Step since the
// last move: setting the limit stops the world for a moment. A nil *Limit
// (GOMEMLIMIT set) follows nothing.
type Limit struct {
	// Base is the limit with an empty file; Step how far the file must
	// move before the limit does.
	Base, Step int64
	last       atomic.Int64 // file bytes at the last move
}

// Set gives the runtime a soft memory limit sized from the cache, unless
// GOMEMLIMIT is set: by default the GC lets the heap grow to twice the
// live data, which for a cache-sized heap means twice the memory an
// operator planned for. The limit makes the GC work harder near it
// instead; it is soft, so the process is never killed by it. Unless GOGC
// is set it also sets GCPercent. It returns a nil Limit when GOMEMLIMIT
// is set, and gcPercent 0 when GOGC is.
//
// The budget is the cache, an eighth for entries evicted but not yet
// collected and for bodies in flight, and 32 MiB for the runtime and the
// SDK, at least 64 MiB.
func Set(cacheMaxBytes int64) (lim *Limit, gcPercent int) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil, 0
	}
	lim = &Limit{
		Base: max(cacheMaxBytes+cacheMaxBytes/8+32<<20, 64<<20),
		Step: max(cacheMaxBytes/8, 1<<20),
	}
	debug.SetMemoryLimit(lim.Base)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
		gcPercent = GCPercent
	}
	return lim, gcPercent
}

// Follow is called with the memory file's size after the cache changes:
// bodies there are RAM the runtime does not see, so the heap's limit
// gives them up and a heap of small bodies and a file of large ones share
// one budget.
func (l *Limit) Follow(file int64) {
	if l == nil {
		return
	}
	last := l.last.Load()
	if (file-last < l.Step && last-file < l.Step) || !l.last.CompareAndSwap(last, file) {
		return
	}
	// The floor leaves the runtime room to work, whatever the file holds.
	debug.SetMemoryLimit(max(l.Base-file, 32<<20))
}
