// Package hll is a HyperLogLog sketch: the number of distinct 64-bit
// hashes added, estimated in a fixed 4 KiB (2^12 registers, a standard
// error of about 1.6%), exact while it has seen few. It is the memory
// store's counterpart of Redis's PFADD/PFCOUNT.
package hll

import (
	"math"
	"math/bits"
)

const (
	p = 12
	m = 1 << p
	// maxExact is how many distinct hashes a sketch keeps exactly before
	// it turns into registers: most principals ask for far fewer tiles
	// than a sweep, and then cost less than the 4 KiB.
	maxExact = 512
)

// Sketch counts distinct hashes. The zero Sketch is empty and ready.
// Not safe for concurrent use.
type Sketch struct {
	exact map[uint64]struct{}
	regs  []uint8 // m registers once dense
}

// Add adds hash h (a well-mixed 64-bit hash: see Mix).
func (s *Sketch) Add(h uint64) {
	if s.regs == nil {
		if s.exact == nil {
			s.exact = make(map[uint64]struct{})
		}
		s.exact[h] = struct{}{}
		if len(s.exact) <= maxExact {
			return
		}
		s.regs = make([]uint8, m)
		for e := range s.exact {
			s.add(e)
		}
		s.exact = nil
		return
	}
	s.add(h)
}

func (s *Sketch) add(h uint64) {
	idx := h >> (64 - p)
	rho := uint8(bits.LeadingZeros64(h<<p|1<<(p-1))) + 1
	if rho > s.regs[idx] {
		s.regs[idx] = rho
	}
}

// Count estimates how many distinct hashes were added.
func (s *Sketch) Count() int64 {
	if s.regs == nil {
		return int64(len(s.exact))
	}
	sum, zeros := 0.0, 0
	for _, r := range s.regs {
		sum += 1 / float64(uint64(1)<<r)
		if r == 0 {
			zeros++
		}
	}
	alpha := 0.7213 / (1 + 1.079/m)
	e := alpha * m * m / sum
	if e <= 2.5*m && zeros > 0 { // small range: linear counting
		e = m * math.Log(float64(m)/float64(zeros))
	}
	return int64(e + 0.5)
}

// Bytes is about how much memory s holds.
func (s *Sketch) Bytes() int {
	if s.regs != nil {
		return m
	}
	return 16 * len(s.exact)
}

// Mix finalises a hash (splitmix64's), so that nearby inputs spread over
// every register.
func Mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
