package exfil

import (
	"slices"
	"testing"
)

func TestHashSet(t *testing.T) {
	var s hashSet
	want := map[uint64]bool{}
	for i := range 5000 {
		h := uint64(i%1700) * 0x9e3779b97f4a7c15 // re-adds too, and 0
		if got := s.add(h); got != !want[max(h, 1)] {
			t.Fatalf("add(%d) = %v", h, got)
		}
		want[max(h, 1)] = true
	}
	if s.len() != len(want) {
		t.Fatalf("len %d, want %d", s.len(), len(want))
	}
	got := s.appendTo(nil)
	slices.Sort(got)
	if len(got) != len(want) || slices.Compact(got)[0] == 0 {
		t.Fatalf("appendTo: %d hashes", len(got))
	}
	s.reset()
	if s.len() != 0 || len(s.appendTo(nil)) != 0 || !s.add(7) {
		t.Fatal("reset left hashes")
	}
}
