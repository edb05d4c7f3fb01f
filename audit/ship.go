package audit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Uploader puts a file's bytes into S3 and verifies them
// (origin.S3.Upload).
type Uploader interface {
	Upload(ctx context.Context, bucket, key string, body []byte) error
}

// ShipMetrics is what a Shipper reports.
type ShipMetrics interface {
	// AuditShipped counts a file by result: ok, or error (retried).
	AuditShipped(result string)
}

// Shipper uploads rotated files to bucket under prefix, each verified
// before its local copy is removed, in the order they rotated. A file
// that fails is retried, with backoff, until it ships; files still
// queued at a stop ship at the next start (Open hands them over again).
type Shipper struct {
	bucket, prefix string
	up             Uploader
	log            *slog.Logger
	metrics        ShipMetrics

	mu      sync.Mutex
	queue   []string
	wake    chan struct{}
	stopped chan struct{}
}

// NewShipper builds a Shipper; Run ships.
func NewShipper(bucket, prefix string, up Uploader, log *slog.Logger, m ShipMetrics) *Shipper {
	return &Shipper{bucket: bucket, prefix: prefix, up: up, log: log, metrics: m, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
}

// Enqueue queues a rotated file (Deps.Rotated).
func (s *Shipper) Enqueue(path string) {
	s.mu.Lock()
	if !slices.Contains(s.queue, path) {
		s.queue = append(s.queue, path)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Key is where a file goes: its name (replica and time span) under the
// prefix.
func (s *Shipper) Key(path string) string { return s.prefix + filepath.Base(path) }

// Run ships queued files until ctx ends.
func (s *Shipper) Run(ctx context.Context) {
	defer close(s.stopped)
	backoff := time.Second
	for {
		s.mu.Lock()
		var next string
		if len(s.queue) > 0 {
			next = s.queue[0]
		}
		s.mu.Unlock()
		if next == "" {
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		if err := s.Ship(ctx, next); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("audit file not shipped; retrying", "file", next, "bucket", s.bucket, "key", s.Key(next), "in", backoff, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		s.mu.Lock()
		s.queue = slices.DeleteFunc(s.queue, func(p string) bool { return p == next })
		s.mu.Unlock()
	}
}

// Ship uploads one file, verified, and removes the local copy.
func (s *Shipper) Ship(ctx context.Context, path string) error {
	body, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil // shipped already
	}
	if err != nil {
		s.metrics.AuditShipped("error")
		return err
	}
	uctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := s.up.Upload(uctx, s.bucket, s.Key(path), body); err != nil {
		s.metrics.AuditShipped("error")
		return err
	}
	s.metrics.AuditShipped("ok")
	s.log.Info("audit file shipped", "file", path, "bucket", s.bucket, "key", s.Key(path), "bytes", len(body))
	return os.Remove(path)
}

// Pending is how many files wait to ship.
func (s *Shipper) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}
