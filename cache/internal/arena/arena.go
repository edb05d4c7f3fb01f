// Package arena keeps small byte blocks (a cached tile's header text and
// a body too small for the memory file) in large spans outside the Go
// heap, addressed by integers: a million cached tiles are then a few
// thousand spans the collector never sees, instead of a million objects
// it marks on every cycle, and the heap the GC sizes its goal from holds
// only what requests use.
//
// Blocks come in size classes (64 bytes apart up to 1 KiB, then an
// eighth apart), carved from 1 MiB spans; a freed block is reused by the
// next block of its class, and a span whose blocks are all free gives its
// pages back to the system. The caller owns lifetimes: Free a block once
// nobody reads it any more (the cache counts holds per entry).
//
// On Linux spans are anonymous mappings (mmap); elsewhere they are heap
// byte slices, which hold no pointers and so are not scanned either.
package arena

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Ref addresses a block: its span and its offset in it.
type Ref uint64

func ref(span, off int) Ref         { return Ref(uint64(span)<<32 | uint64(off)) }
func (r Ref) span() int             { return int(r >> 32) }
func (r Ref) off() int              { return int(uint32(r)) }
func (a *Arena) spanOf(r Ref) *span { return a.spans[r.span()] }

// SpanSize is the size of one span.
const SpanSize = 1 << 20

// MaxBlock is the largest block Alloc takes.
const MaxBlock = 64 << 10

// ErrTooLarge: a block over MaxBlock.
var ErrTooLarge = errors.New("arena: block too large")

// classes are the block sizes, ascending.
var classes = func() []int {
	var cs []int
	for c := 64; c <= MaxBlock; {
		cs = append(cs, c)
		step := 64
		if c >= 1024 {
			step = (c/8 + 63) &^ 63
		}
		c += step
	}
	if cs[len(cs)-1] != MaxBlock {
		cs = append(cs, MaxBlock)
	}
	return cs
}()

// ClassSize is the memory a block of n bytes takes: its class's size;
// 0 when n is over MaxBlock.
func ClassSize(n int) int {
	if i := classOf(n); i >= 0 {
		return classes[i]
	}
	return 0
}

func classOf(n int) int {
	lo, hi := 0, len(classes)
	for lo < hi {
		m := (lo + hi) / 2
		if classes[m] < n {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(classes) {
		return -1
	}
	return lo
}

type span struct {
	mem   []byte
	class int
	used  int  // blocks allocated from it
	live  bool // its pages are in use (not given back)
}

// Arena is safe for concurrent use. Bytes of allocated blocks may be read
// and written without locks by whoever owns them.
type Arena struct {
	mu    sync.Mutex
	spans []*span      // by index; append-only (spans are never unmapped)
	free  [][]Ref      // by class: free blocks
	size  atomic.Int64 // bytes of spans whose pages are in use
	// view is spans as last published, so Bytes reads without mu.
	view atomic.Pointer[[]*span]
}

// New returns an empty arena.
func New() *Arena {
	a := &Arena{free: make([][]Ref, len(classes))}
	a.view.Store(&a.spans)
	return a
}

// Alloc returns a block of n bytes (its contents are undefined).
func (a *Arena) Alloc(n int) (Ref, []byte, error) {
	c := classOf(n)
	if c < 0 {
		return 0, nil, ErrTooLarge
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.free[c]) == 0 {
		if err := a.grow(c); err != nil {
			return 0, nil, err
		}
	}
	fl := a.free[c]
	r := fl[len(fl)-1]
	a.free[c] = fl[:len(fl)-1]
	s := a.spans[r.span()]
	if s.used == 0 && !s.live {
		s.live = true
		a.size.Add(SpanSize)
	}
	s.used++
	return r, s.mem[r.off() : r.off()+n : r.off()+n], nil
}

// grow adds a span of class c and its blocks to the free list.
func (a *Arena) grow(c int) error {
	mem, err := mapSpan(SpanSize)
	if err != nil {
		return err
	}
	idx := len(a.spans)
	spans := append(a.spans, &span{mem: mem, class: c})
	a.spans = spans
	a.view.Store(&spans)
	size := classes[c]
	// Pushed in reverse so blocks are handed out from the span's start.
	for off := (SpanSize/size - 1) * size; off >= 0; off -= size {
		a.free[c] = append(a.free[c], ref(idx, off))
	}
	return nil
}

// Bytes is the block at r, n bytes long (n as given to Alloc).
func (a *Arena) Bytes(r Ref, n int) []byte {
	s := (*a.view.Load())[r.span()]
	return s.mem[r.off() : r.off()+n : r.off()+n]
}

// Free returns r's block for reuse. A span left with no blocks in use
// gives its pages back to the system.
func (a *Arena) Free(r Ref) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.spanOf(r)
	a.free[s.class] = append(a.free[s.class], r)
	s.used--
	if s.used == 0 && s.live && release(s.mem) {
		s.live = false
		a.size.Add(-SpanSize)
	}
}

// Close unmaps every span: no block may be read after it.
func (a *Arena) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	for _, s := range a.spans {
		err = errors.Join(err, unmapSpan(s.mem))
		s.mem = nil
	}
	a.spans, a.free = nil, make([][]Ref, len(classes))
	a.view.Store(&a.spans)
	a.size.Store(0)
	return err
}

// Size is the memory the arena's spans take: every span with a block in
// use, whole.
func (a *Arena) Size() int64 { return a.size.Load() }
