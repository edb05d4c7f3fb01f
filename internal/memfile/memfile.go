// Package memfile keeps byte blocks in an anonymous memory file (a memfd
// on Linux), off the Go heap, so that a cache hit can hand the kernel a
// file section to send with sendfile(2) instead of copying it out of
// user memory.
//
// Lifetimes are explicit: a Block is reference-counted. Put returns it
// held once, by the caller; every further user Acquires it and Releases it
// when done, and the last Release punches its pages out of the file
// (fallocate PUNCH_HOLE), at once, on the releasing goroutine. Offsets are
// never reused, so bytes already handed to the kernel by sendfile can
// never change under a send, and a Block can never read another block's
// bytes, whatever the timing.
package memfile

import (
	"errors"
	"io"
	"os"
	"sync/atomic"
)

// PageSize aligns blocks in the file, so that punching one out frees
// whole pages and touches no neighbour's.
const PageSize = 4096

// maxOffset keeps offsets far from overflow; a file that reaches it
// (2^62 bytes written, over a century at 1 GB/s) refuses new blocks.
const maxOffset = 1 << 62

// Errors from New and Put.
var (
	// ErrUnsupported: this system has no anonymous memory files.
	ErrUnsupported = errors.New("memfile: no memory files on this system")
	// ErrFull: the file's offsets are used up.
	ErrFull = errors.New("memfile: offsets used up")
)

// File is one memory file. It is safe for concurrent use.
type File struct {
	f         *os.File
	next      atomic.Int64 // end of the last block's pages
	allocated atomic.Int64 // bytes of pages of blocks not yet freed
	misuses   atomic.Int64 // Releases of blocks not held (bugs)
	punch     func(off, n int64) error
}

// RoundPage is n rounded up to whole pages: what a block of n bytes takes.
func RoundPage(n int64) int64 { return (n + PageSize - 1) &^ (PageSize - 1) }

// Put copies body into fresh pages at the end of the file and returns
// its block, held once by the caller.
func (f *File) Put(body []byte) (*Block, error) {
	size := RoundPage(int64(len(body)))
	off := f.next.Add(size) - size
	if off+size > maxOffset {
		return nil, ErrFull
	}
	f.allocated.Add(size)
	b := &Block{f: f, off: off, n: int64(len(body))}
	b.refs.Store(1)
	if _, err := f.f.WriteAt(body, off); err != nil {
		b.Release()
		return nil, err
	}
	return b, nil
}

// Allocated is the memory the file takes: the pages of every block not
// yet released for the last time.
func (f *File) Allocated() int64 { return f.allocated.Load() }

// Misuses counts Releases of blocks that were not held: always 0 unless
// a caller has a bug. Tests assert it.
func (f *File) Misuses() int64 { return f.misuses.Load() }

// Fd is the file's descriptor, for tests that look at what the kernel
// holds (fstat's block count).
func (f *File) Fd() uintptr { return f.f.Fd() }

// Close releases the file. Blocks still held must not be read after it.
func (f *File) Close() error { return f.f.Close() }

// Block is one body in the file. Its bytes never change; it is readable
// while held.
type Block struct {
	f      *File
	off, n int64
	refs   atomic.Int64
}

// TryAcquire takes one more hold on b, unless its last hold was already
// released (its pages may be gone): then it reports false and b must not
// be read.
func (b *Block) TryAcquire() bool {
	for {
		n := b.refs.Load()
		if n <= 0 {
			return false
		}
		if b.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release drops one hold; the last frees b's pages.
func (b *Block) Release() {
	switch n := b.refs.Add(-1); {
	case n > 0:
	case n == 0:
		size := RoundPage(b.n)
		// An error leaves the pages allocated until the file goes;
		// nothing can read them wrongly, as offsets are not reused.
		_ = b.f.punch(b.off, size)
		b.f.allocated.Add(-size)
	default:
		// A release without a hold is a bug in the caller. Undo it (the
		// pages went with the hold that reached zero) and count it, for
		// tests to assert on, rather than take the server down.
		b.refs.Add(1)
		b.f.misuses.Add(1)
	}
}

// Len is the block's length in bytes.
func (b *Block) Len() int64 { return b.n }

// Memory is what the block takes in the file: whole pages.
func (b *Block) Memory() int64 { return RoundPage(b.n) }

// Section reads the block. It is an *io.SectionReader over an *os.File,
// which net/http (through internal/coalesce) sends with sendfile; read it
// only while holding b.
func (b *Block) Section() *io.SectionReader { return io.NewSectionReader(b.f.f, b.off, b.n) }

// SectionAt reads n bytes of the block from off, clipped to the block.
func (b *Block) SectionAt(off, n int64) *io.SectionReader {
	off = min(max(off, 0), b.n)
	n = min(max(n, 0), b.n-off)
	return io.NewSectionReader(b.f.f, b.off+off, n)
}
