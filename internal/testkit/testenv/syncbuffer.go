package testenv

import (
	"strings"
	"sync"
)

// SyncBuffer is a goroutine-safe log sink for asserting on captured logs.
type SyncBuffer struct {
	mu sync.Mutex // protects b
	b  strings.Builder
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
