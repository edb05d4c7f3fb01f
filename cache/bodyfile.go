package cache

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Bodies of fileMin bytes or more are kept in a memory file rather than
// on the Go heap, so a hit can hand the kernel the file's pages with
// sendfile(2) (coalesce.ReadFrom) instead of having it copy the body from
// user memory: ~2.5 µs of a ~25 µs hit for a 22 KB tile (bench/README).
// Below it a body is no more than the one write it already shares with
// the header, and a page of file would mostly be waste.
const fileMin = 8 << 10

// pageSize aligns bodies in the file, so that punching one out frees
// whole pages and touches no neighbour's.
const pageSize = 4096

// bodyFile is an anonymous memory file (memfd) holding cache bodies.
//
// Offsets are never reused: a body gets fresh pages at the end of the
// file, and when no Entry refers to it any more its pages are punched out
// (freed; they would read back as zeros). So bytes already handed to the
// kernel by sendfile, which holds them by reference until the client has
// them, can never change under a send, and nothing a request reads can
// ever belong to another object. A body is freed by a cleanup once the
// entry that owns it is unreachable, exactly as the heap would free a
// []byte: whatever handler still holds the Entry keeps its body alive,
// with no reference counts to get wrong.
//
// The cost of leaving frees to the garbage collector is that they wait for
// a cycle, and with bodies off the heap a cycle may be long in coming; the
// cache asks for one (gc) when more than slack bytes wait, and makes a
// store wait for one when three times that do.
type bodyFile struct {
	f         *os.File
	next      atomic.Int64 // end of the last body's pages
	allocated atomic.Int64 // bytes of bodies not yet punched
	gcRunning atomic.Bool
	syncGC    sync.Mutex   // held by the store waiting for a collection
	gcs       atomic.Int64 // collections asked for
	punch     func(off, n int64) error
}

// maxOffset keeps offsets far from overflow; a file that reaches it (2^62
// bytes written, over a century at 1 GB/s) keeps new bodies on the heap.
const maxOffset = 1 << 62

func roundPage(n int64) int64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// put copies body into the file at a fresh offset, which it returns; the
// pages are freed once owner is unreachable (entries that share the body
// refer to owner).
func (b *bodyFile) put(owner *Entry, body []byte) (int64, error) {
	size := roundPage(int64(len(body)))
	off := b.next.Add(size) - size
	if off+size > maxOffset {
		return 0, errFileFull
	}
	if _, err := b.f.WriteAt(body, off); err != nil {
		b.free(off, size)
		return 0, err
	}
	b.allocated.Add(size)
	runtime.AddCleanup(owner, release, pages{b, off, size})
	return off, nil
}

// pages is what a cleanup frees.
type pages struct {
	b         *bodyFile
	off, size int64
}

// release is the cleanup. It is a plain function, not a closure over b,
// so that adding it allocates one object fewer per body: each is one
// more thing for the collector to visit on every cycle.
func release(p pages) {
	p.b.free(p.off, p.size)
	p.b.allocated.Add(-p.size)
}

// free gives the pages of [off, off+size) back to the system.
func (b *bodyFile) free(off, size int64) {
	// An error leaves the pages allocated until the file goes; nothing
	// can read them wrongly, as offsets are not reused.
	b.punch(off, size)
}

// gc asks for a collection when more than slack bytes of the file belong
// to no cached entry (evicted, or held only by requests in flight); live
// is what cached entries hold. Normally the collection runs in the
// background, one at a time; the heap is small once bodies are off it, so
// a cycle is cheap. If misses outrun that (a flood of new tiles on a busy
// machine) and the excess passes 3 x slack, the caller, a store, waits
// for a collection and its frees itself: the file cannot run away,
// however the scheduler treats the background one.
func (b *bodyFile) gc(live, slack int64) {
	over := b.allocated.Load() - live
	if over <= slack {
		return
	}
	if over > 3*slack && b.syncGC.TryLock() {
		defer b.syncGC.Unlock()
		b.gcs.Add(1)
		runtime.GC()
		// Cleanups run on their own goroutine after the cycle; give them
		// a moment (bounded: a body still in flight keeps its pages).
		for i := 0; i < 50 && b.allocated.Load()-live > slack; i++ {
			time.Sleep(200 * time.Microsecond)
		}
		return
	}
	if !b.gcRunning.CompareAndSwap(false, true) {
		return
	}
	b.gcs.Add(1)
	go func() {
		defer b.gcRunning.Store(false)
		runtime.GC()
	}()
}

var errFileFull = errors.New("cache: memory file offsets used up")
