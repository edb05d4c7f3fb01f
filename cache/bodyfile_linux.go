package cache

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// newBodyFile creates the memory file. It lives in RAM (or swap) like
// heap memory, counts towards the process's memory cgroup, and is gone
// when the process is; it shows in /proc/PID/fd as
// "/memfd:tileproxy-cache".
func newBodyFile() (*bodyFile, error) {
	fd, err := unix.MemfdCreate("tileproxy-cache", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cache: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:tileproxy-cache")
	b := &bodyFile{f: f}
	b.punch = func(off, n int64) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	return b, nil
}
