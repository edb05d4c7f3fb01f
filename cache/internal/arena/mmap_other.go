//go:build !linux

package arena

// mapSpan is a heap byte slice where there is no mmap wrapper here: it
// holds no pointers, so the collector does not scan it.
func mapSpan(n int) ([]byte, error) { return make([]byte, n), nil }

// release cannot give heap pages back early; the span stays live.
func release([]byte) bool { return false }

func unmapSpan([]byte) error { return nil }
