//go:build !linux

package cache

import "errors"

// newBodyFile: memory files and sendfile are Linux's; elsewhere bodies
// stay on the heap.
func newBodyFile() (*bodyFile, error) {
	return nil, errors.New("cache: no memory file on this system")
}
