//go:build !linux

package coalesce

import "os"

// sender is Linux-only.
type sender struct{}

// sendFile is Linux-only; elsewhere ReadFrom copies.
func (c *conn) sendFile(f *os.File, off, n int64) (int64, bool, error) {
	return 0, false, nil
}
