package arena

import "golang.org/x/sys/unix"

// mapSpan maps n bytes of anonymous memory: pages are taken when first
// written, outside the Go heap.
func mapSpan(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

// release gives a span's pages back (they read as zeros if used again).
func release(mem []byte) bool { return unix.Madvise(mem, unix.MADV_DONTNEED) == nil }

func unmapSpan(mem []byte) error { return unix.Munmap(mem) }
