package exfil

// hashSet is a set of tile hashes, open addressing with linear probing:
// a lookup on the hot path costs a few nanoseconds, where a map costs
// tens. It grows by doubling; 0 marks an empty slot (a hash of 0 is
// stored as 1: sweep detection can afford the collision).
type hashSet struct {
	slots []uint64
	n     int
}

// add adds h and reports whether it was new.
func (s *hashSet) add(h uint64) bool {
	if h == 0 {
		h = 1
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	mask := uint64(len(s.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case h:
			return false
		case 0:
			s.slots[i] = h
			s.n++
			return true
		}
	}
}

func (s *hashSet) grow() {
	old := s.slots
	s.slots, s.n = make([]uint64, max(64, 2*len(old))), 0
	for _, h := range old {
		if h != 0 {
			s.add(h)
		}
	}
}

// len is how many hashes s holds.
func (s *hashSet) len() int { return s.n }

// appendTo appends s's hashes to dst.
func (s *hashSet) appendTo(dst []uint64) []uint64 {
	for _, h := range s.slots {
		if h != 0 {
			dst = append(dst, h)
		}
	}
	return dst
}

// reset empties s, keeping its room unless it grew large.
func (s *hashSet) reset() {
	if len(s.slots) > 1024 {
		s.slots = nil
	} else {
		clear(s.slots)
	}
	s.n = 0
}
