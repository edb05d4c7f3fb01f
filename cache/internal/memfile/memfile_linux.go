package memfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// New creates a memory file. It lives in RAM (or swap) like heap memory,
// counts towards the process's memory cgroup, and is gone when the
// process is; it shows in /proc/PID/fd as "/memfd:NAME".
func New(name string) (*File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfile: memfd_create: %w", err)
	}
	f := &File{f: os.NewFile(uintptr(fd), "memfd:"+name)}
	f.punch = func(off, n int64) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}
	return f, nil
}
