//go:build !linux

package memfile

// New: memory files and sendfile are Linux's; elsewhere callers keep
// their bytes on the heap.
func New(name string) (*File, error) { return nil, ErrUnsupported }
