package memfile

import (
	"bytes"
	"io"
	"runtime"
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

// TestPutFree: a span reads back until freed, takes whole pages
// (Allocated and the kernel agree), Free gives them back, and spans never
// share a page or an offset.
func TestPutFree(t *testing.T) {
	f := newFile(t)
	body := bytes.Repeat([]byte("tile"), 5000) // 20,000 bytes: 5 pages
	s, err := f.Put(body)
	if err != nil {
		t.Fatal(err)
	}
	if f.Allocated() != 5*PageSize || blocks(t, f) != 5*PageSize || s.Memory() != 5*PageSize {
		t.Fatalf("after Put: %d allocated, %d in the kernel; want %d", f.Allocated(), blocks(t, f), 5*PageSize)
	}
	other, err := f.Put([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Off < s.Off+s.Memory() {
		t.Fatalf("second span at %d overlaps the first's pages (%d+%d)", other.Off, s.Off, s.Memory())
	}
	got, _ := io.ReadAll(f.Section(s, 0, s.N))
	if !bytes.Equal(got, body) {
		t.Fatal("span read back other bytes")
	}
	part, _ := io.ReadAll(f.Section(s, 19998, 100))
	if string(part) != "le" {
		t.Fatalf("Section past the end: %q, want the last two bytes", part)
	}
	f.Free(s)
	if f.Allocated() != PageSize || blocks(t, f) != PageSize {
		t.Fatalf("after Free: %d allocated, %d in the kernel; want one page", f.Allocated(), blocks(t, f))
	}
	again, _ := f.Put(body)
	if again.Off <= other.Off {
		t.Fatalf("a freed offset was reused: %d", again.Off)
	}
	got, _ = io.ReadAll(f.Section(other, 0, other.N))
	if string(got) != "x" {
		t.Fatalf("neighbour after a free: %q", got)
	}
}
