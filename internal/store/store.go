// Package store holds the state that replicas share for the limits of
// package exfil and the revocations of package revoke: counters, sets of
// distinct tiles and revoked entries. Memory keeps them in this process;
// Redis keeps them on a Redis 7 or Valkey server, where every replica
// pointing at it sees the same.
package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tileproxy/tileproxy/internal/hll"
)

// ErrUnavailable wraps every failure to reach the store.
var ErrUnavailable = errors.New("limits store unavailable")

// Op is one change applied by Store.Apply.
type Op struct {
	// Key names a counter, or a distinct set when Distinct is set.
	Key      string
	Distinct bool
	// Add is added to a counter. With Cap set, at most what keeps the
	// counter within Cap is added (a lease of tiles under a quota), and
	// the result says how much was.
	Add int64
	Cap int64
	// Items are added to a distinct set (tile hashes).
	Items []uint64
	// TTL is the key's lifetime, counted from its creation.
	TTL time.Duration
}

// Result is what one Op did.
type Result struct {
	// Total is what the key holds after the op.
	Total int64
	// Added is what a counter op added: Add, or less under a Cap.
	Added int64
}

// grant is what a capped op of add may add to a counter at cur.
func grant(add, limit, cur int64) int64 {
	if limit <= 0 || add <= 0 {
		return add
	}
	return max(0, min(add, limit-cur))
}

// Store is the shared state.
type Store interface {
	// Apply applies ops in one round trip and returns, for each, what its
	// key now holds (a counter's total, a distinct set's estimated size)
	// and what was added.
	Apply(ctx context.Context, ops []Op) ([]Result, error)
	// Revoke records entry ("sub <iss> <sub>" or "jti <jti>") until then.
	Revoke(ctx context.Context, entry string, until time.Time) error
	// Revocations returns the entries in force and the version they are
	// at; entries is nil when the version is still since.
	Revocations(ctx context.Context, since int64) (version int64, entries map[string]time.Time, err error)
	// Shared reports whether other processes see this store.
	Shared() bool
	Close() error
}

// Memory is a Store in this process.
type Memory struct {
	now func() time.Time

	mu       sync.Mutex
	counters map[string]*counter
	sets     map[string]*set
	revoked  map[string]time.Time
	version  int64
	applied  int // Apply calls since the last purge of expired keys
}

type counter struct {
	n       int64
	expires time.Time
}

type set struct {
	s       hll.Sketch
	expires time.Time
}

// NewMemory builds an empty Memory store on the clock now.
func NewMemory(now func() time.Time) *Memory {
	return &Memory{now: now, counters: map[string]*counter{}, sets: map[string]*set{}, revoked: map[string]time.Time{}}
}

// Apply implements Store.
func (m *Memory) Apply(_ context.Context, ops []Op) ([]Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if m.applied++; m.applied >= 1024 {
		m.purge(now)
	}
	out := make([]Result, len(ops))
	for i, op := range ops {
		if op.Distinct {
			s := m.sets[op.Key]
			if s == nil || !now.Before(s.expires) {
				s = &set{expires: now.Add(op.TTL)}
				m.sets[op.Key] = s
			}
			for _, h := range op.Items {
				s.s.Add(hll.Mix(h))
			}
			out[i].Total = s.s.Count()
			continue
		}
		c := m.counters[op.Key]
		if c == nil || !now.Before(c.expires) {
			c = &counter{expires: now.Add(op.TTL)}
			m.counters[op.Key] = c
		}
		g := grant(op.Add, op.Cap, c.n)
		c.n += g
		out[i] = Result{Total: c.n, Added: g}
	}
	return out, nil
}

// purge drops expired keys.
func (m *Memory) purge(now time.Time) {
	m.applied = 0
	for k, c := range m.counters {
		if !now.Before(c.expires) {
			delete(m.counters, k)
		}
	}
	for k, s := range m.sets {
		if !now.Before(s.expires) {
			delete(m.sets, k)
		}
	}
}

// Revoke implements Store.
func (m *Memory) Revoke(_ context.Context, entry string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[entry] = until
	m.version++
	return nil
}

// Revocations implements Store.
func (m *Memory) Revocations(_ context.Context, since int64) (int64, map[string]time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.version == since {
		return since, nil, nil
	}
	now := m.now()
	out := make(map[string]time.Time, len(m.revoked))
	for e, until := range m.revoked {
		if now.Before(until) {
			out[e] = until
		}
	}
	return m.version, out, nil
}

// Shared implements Store: a Memory store is this process's alone.
func (m *Memory) Shared() bool { return false }

// Close implements Store.
func (m *Memory) Close() error { return nil }
