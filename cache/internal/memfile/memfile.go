// Package memfile keeps byte blocks in an anonymous memory file (a memfd
// on Linux), off the Go heap, so that a cache hit can hand the kernel a
// file section to send with sendfile(2) instead of copying it out of
// user memory.
//
// A block is a Span: two integers, no pointers, so that a million cached
// bodies cost the garbage collector nothing to scan. Lifetimes are the
// caller's: Put returns a span, and Free punches its pages out of the
// file (fallocate PUNCH_HOLE) once nobody reads it any more; the cache
// counts holds on each entry and frees at the last release. Offsets are
// never reused, so bytes already handed to the kernel by sendfile can
// never change under a send, and a span can never read another's bytes,
// whatever the timing.
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
	next      atomic.Int64 // end of the last span's pages
	allocated atomic.Int64 // bytes of pages of spans not yet freed
	punch     func(off, n int64) error
}

// RoundPage is n rounded up to whole pages: what a span of n bytes takes.
func RoundPage(n int64) int64 { return (n + PageSize - 1) &^ (PageSize - 1) }

// Span is one body in the file. Its bytes never change until Free.
type Span struct {
	Off, N int64
}

// Memory is what the span takes in the file: whole pages.
func (s Span) Memory() int64 { return RoundPage(s.N) }

// Put copies body into fresh pages at the end of the file.
func (f *File) Put(body []byte) (Span, error) {
	size := RoundPage(int64(len(body)))
	off := f.next.Add(size) - size
	if off+size > maxOffset {
		return Span{}, ErrFull
	}
	f.allocated.Add(size)
	s := Span{Off: off, N: int64(len(body))}
	if _, err := f.f.WriteAt(body, off); err != nil {
		f.Free(s)
		return Span{}, err
	}
	return s, nil
}

// Free punches s's pages out of the file. Call it once per span, after
// its last read.
func (f *File) Free(s Span) {
	size := s.Memory()
	// An error leaves the pages allocated until the file goes; nothing
	// can read them wrongly, as offsets are not reused.
	_ = f.punch(s.Off, size)
	f.allocated.Add(-size)
}

// Allocated is the memory the file takes: the pages of every span not
// yet freed.
func (f *File) Allocated() int64 { return f.allocated.Load() }

// Fd is the file's descriptor, for tests that look at what the kernel
// holds (fstat's block count).
func (f *File) Fd() uintptr { return f.f.Fd() }

// Close releases the file. Spans must not be read after it.
func (f *File) Close() error { return f.f.Close() }

// Section reads n bytes of s from off, clipped to s. It is an
// *io.SectionReader over an *os.File, which net/http (through
// internal/coalesce) sends with sendfile; read it only before Free.
func (f *File) Section(s Span, off, n int64) *io.SectionReader {
	off = min(max(off, 0), s.N)
	n = min(max(n, 0), s.N-off)
	return io.NewSectionReader(f.f, s.Off+off, n)
}
