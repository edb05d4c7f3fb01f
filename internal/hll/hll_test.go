package hll

import (
	"math"
	"testing"
)

func TestCount(t *testing.T) {
	for _, n := range []int{0, 1, 100, 512, 513, 1000, 5000, 20_000, 200_000} {
		var s Sketch
		for i := range n {
			s.Add(Mix(uint64(i)))
			s.Add(Mix(uint64(i))) // again: distinct is distinct
		}
		got := s.Count()
		if n <= maxExact {
			if got != int64(n) {
				t.Errorf("%d distinct: counted %d, want exact", n, got)
			}
			continue
		}
		// 1.6% standard error: 5% is beyond three of them.
		if rel := math.Abs(float64(got)-float64(n)) / float64(n); rel > 0.05 {
			t.Errorf("%d distinct: counted %d (%.1f%% off)", n, got, 100*rel)
		}
	}
}

func TestBytes(t *testing.T) {
	var s Sketch
	for i := range 10 {
		s.Add(Mix(uint64(i)))
	}
	if s.Bytes() >= m {
		t.Errorf("10 hashes hold %d bytes", s.Bytes())
	}
	for i := range 10_000 {
		s.Add(Mix(uint64(i)))
	}
	if s.Bytes() != m {
		t.Errorf("dense: %d bytes", s.Bytes())
	}
}
