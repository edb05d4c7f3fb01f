package cache

import (
	"sync"
	"time"
)

// Recency is exact while the cache is small; in a large one, a hit on
// an entry that went to the front less than moveEvery ago leaves it where
// it is, and the moves hits do ask for are batched: noted in one of
// moveStripes buffers and applied moveBatch at a time under the write
// lock, and all of them before anything is evicted. Moving an entry writes
// the list links of it and its neighbours under the write lock; with a
// million entries hit at random nearly every hit is a first within the
// second, and one write lock per hit made the lock the tail
// (bench/results/history-to-2026-12-02.md). This way hits share a read lock, one in moveBatch
// takes the write lock briefly, and recency is still known to within
// moveEvery when it matters: at eviction.
const (
	exactBelow  = 64
	moveEvery   = time.Second
	moveBatch   = 64
	moveStripes = 8
)

// recency holds the LRU moves hits asked for and the store has not made
// yet, striped by key hash.
type recency struct {
	moves [moveStripes]moveBuf
}

// moveBuf holds moves hits asked for and the LRU has not made yet.
type moveBuf struct {
	mu sync.Mutex // protects n and h
	n  int
	h  [moveBatch]uint64
}

// note asks for h's entry to go to the front. When its buffer fills, it
// returns the batch for the caller to apply under the write lock.
func (r *recency) note(h uint64) (batch [moveBatch]uint64, full bool) {
	b := &r.moves[h%moveStripes]
	b.mu.Lock()
	defer b.mu.Unlock()
	b.h[b.n] = h
	if b.n++; b.n < moveBatch {
		return batch, false
	}
	b.n = 0
	return b.h, true
}

// drain applies every move asked for; under the write lock, before an
// eviction, so that it evicts by what recency says.
func (r *recency) drain(apply func(h uint64)) {
	for j := range r.moves {
		b := &r.moves[j]
		b.mu.Lock()
		for _, h := range b.h[:b.n] {
			apply(h)
		}
		b.n = 0
		b.mu.Unlock()
	}
}
