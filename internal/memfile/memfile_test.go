package memfile

import (
	"bytes"
	"io"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

func newFile(t *testing.T) *File {
	t.Helper()
	f, err := New("memfile-test")
	if err != nil {
		if runtime.GOOS == "linux" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// blocks is what the kernel really holds for the file, in bytes.
func blocks(t *testing.T, f *File) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestHoldsAndRelease: a block reads back while held by anyone, its pages
// go at the last release (Allocated and the kernel agree), a released
// block cannot be acquired again, and a stray release is counted, not
// applied.
func TestHoldsAndRelease(t *testing.T) {
	f := newFile(t)
	body := bytes.Repeat([]byte("tile"), 5000) // 20,000 bytes: 5 pages
	b, err := f.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	if f.Allocated() != 5*PageSize || blocks(t, f) != 5*PageSize {
		t.Fatalf("after Put: %d allocated, %d in the kernel; want %d", f.Allocated(), blocks(t, f), 5*PageSize)
	}
	if !b.TryAcquire() {
		t.Fatal("TryAcquire on a held block failed")
	}
	b.Release()
	got, _ := io.ReadAll(b.Section())
	if !bytes.Equal(got, body) || f.Allocated() != 5*PageSize {
		t.Fatal("one of two holds released: the block must stay")
	}
	part, _ := io.ReadAll(b.SectionAt(19998, 100))
	if string(part) != "le" {
		t.Fatalf("SectionAt past the end: %q, want the last two bytes", part)
	}
	b.Release()
	if f.Allocated() != 0 || blocks(t, f) != 0 {
		t.Fatalf("last hold released: %d allocated, %d in the kernel; want 0", f.Allocated(), blocks(t, f))
	}
	if b.TryAcquire() {
		t.Fatal("TryAcquire on a freed block succeeded")
	}
	b.Release()
	if f.Misuses() != 1 || f.Allocated() != 0 {
		t.Fatalf("a stray release: %d misuses, %d allocated", f.Misuses(), f.Allocated())
	}
}

// TestConcurrentHolds: many goroutines acquiring and releasing one block
// while its first holder lets go; the pages go exactly once, when the
// last is done, and every reader saw the block's own bytes.
func TestConcurrentHolds(t *testing.T) {
	f := newFile(t)
	body := bytes.Repeat([]byte{7}, 3*PageSize)
	b, err := f.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if !b.TryAcquire() {
					return // freed: the first holder and every other reader are done
				}
				got, _ := io.ReadAll(b.Section())
				b.Release()
				if !bytes.Equal(got, body) {
					t.Error("a holder read other bytes")
					return
				}
			}
		})
	}
	b.Release()
	wg.Wait()
	if f.Allocated() != 0 || f.Misuses() != 0 {
		t.Fatalf("%d bytes still allocated, %d misuses", f.Allocated(), f.Misuses())
	}
}
