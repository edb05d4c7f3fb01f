package arena

import (
	"bytes"
	"errors"
	"testing"
)

// TestClasses: every size up to MaxBlock has a class no smaller than it
// and at most an eighth (or 64 bytes) larger; over it, none.
func TestClasses(t *testing.T) {
	for n := 1; n <= MaxBlock; n++ {
		c := ClassSize(n)
		if c < n || (c-n > 63 && c-n > n/8+63) {
			t.Fatalf("ClassSize(%d) = %d", n, c)
		}
	}
	if ClassSize(MaxBlock+1) != 0 {
		t.Fatal("a class over MaxBlock")
	}
	if _, _, err := New().Alloc(MaxBlock + 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Alloc over MaxBlock: %v", err)
	}
}

// TestAllocFree: blocks keep their bytes apart, freed blocks are reused
// by their class, and a span whose blocks are all free leaves Size.
func TestAllocFree(t *testing.T) {
	a := New()
	var refs []Ref
	for i := range 1000 { // 1000 x 4,100 B: several spans of one class
		r, b, err := a.Alloc(4100)
		if err != nil {
			t.Fatal(err)
		}
		for j := range b {
			b[j] = byte(i)
		}
		refs = append(refs, r)
	}
	spans := int64(1000/(SpanSize/ClassSize(4100)) + 1)
	if a.Size() != spans*SpanSize {
		t.Fatalf("Size %d, want %d spans", a.Size(), spans)
	}
	for i, r := range refs {
		if !bytes.Equal(a.Bytes(r, 4100), bytes.Repeat([]byte{byte(i)}, 4100)) {
			t.Fatalf("block %d holds other bytes", i)
		}
	}
	for _, r := range refs[:500] {
		a.Free(r)
	}
	r, _, _ := a.Alloc(4000) // same class: a freed block
	if r != refs[499] {
		t.Fatalf("Alloc after Free: %x, want the last freed block %x", r, refs[499])
	}
	a.Free(r)
	for _, r := range refs[500:] {
		a.Free(r)
	}
	if a.Size() != 0 {
		t.Fatalf("all freed: Size %d", a.Size())
	}
	// Blocks from a released span read as whatever is written again.
	r, b, _ := a.Alloc(100)
	copy(b, "again")
	if string(a.Bytes(r, 5)) != "again" || a.Size() != SpanSize {
		t.Fatalf("reuse after release: %q, size %d", a.Bytes(r, 5), a.Size())
	}
}
