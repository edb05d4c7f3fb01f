package audit

import (
	"os"
	"syscall"
)

// allocate gives f its n bytes on disk now, so that a full disk is an
// error here and never a SIGBUS at a write into the mapping.
func allocate(f *os.File, n int64) error { return syscall.Fallocate(int(f.Fd()), 0, 0, n) }
