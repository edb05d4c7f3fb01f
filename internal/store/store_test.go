package store

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// stores are both implementations: the Redis one on a private
// redis-server.
func stores(t *testing.T) map[string]Store {
	r, err := NewRedis(testenv.StartRedis(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return map[string]Store{"memory": NewMemory(time.Now), "redis": r}
}

func TestApply(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			items := make([]uint64, 3000)
			for i := range items {
				items[i] = uint64(i) * 0x9e3779b97f4a7c15
			}
			res, err := st.Apply(ctx, []Op{
				{Key: "c1", Add: 5, TTL: time.Minute},
				{Key: "s1", Distinct: true, Items: items[:2000], TTL: time.Minute},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Total != 5 || res[0].Added != 5 {
				t.Errorf("counter: %+v", res[0])
			}
			res, err = st.Apply(ctx, []Op{
				{Key: "c1", Add: -2, TTL: time.Minute},
				{Key: "c2", Add: 0, TTL: time.Minute},
				{Key: "s1", Distinct: true, Items: items[1000:], TTL: time.Minute}, // half seen
				{Key: "s2", Distinct: true, TTL: time.Minute},
			})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Total != 3 || res[1].Total != 0 || res[3].Total != 0 {
				t.Errorf("counters %+v %+v, empty set %+v", res[0], res[1], res[3])
			}
			if rel := math.Abs(float64(res[2].Total)-3000) / 3000; rel > 0.05 {
				t.Errorf("distinct: %d of 3000", res[2].Total)
			}
		})
	}
}

// TestLeases: a capped add never takes a counter past its cap.
func TestLeases(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var got []Result
			for range 4 {
				res, err := st.Apply(t.Context(), []Op{{Key: "lease", Add: 6, Cap: 10, TTL: time.Minute}})
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, res[0])
			}
			want := []Result{{Total: 6, Added: 6}, {Total: 10, Added: 4}, {Total: 10, Added: 0}, {Total: 10, Added: 0}}
			if !slices.Equal(got, want) {
				t.Errorf("leases %+v, want %+v", got, want)
			}
			// Given back, uncapped.
			if res, _ := st.Apply(t.Context(), []Op{{Key: "lease", Add: -3, Cap: 10, TTL: time.Minute}}); res[0].Total != 7 {
				t.Errorf("after giving 3 back: %+v", res[0])
			}
		})
	}
}

func TestRevocations(t *testing.T) {
	for name, st := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			v0, entries, err := st.Revocations(ctx, -1)
			if err != nil || len(entries) != 0 {
				t.Fatalf("empty: %v %v", entries, err)
			}
			if err := st.Revoke(ctx, "sub - alice", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			st.Revoke(ctx, "jti old", time.Now().Add(-time.Second)) // already over
			v1, entries, err := st.Revocations(ctx, v0)
			if err != nil || v1 == v0 || len(entries) != 1 || entries["sub - alice"].IsZero() {
				t.Fatalf("after a revoke: version %d -> %d, %v, %v", v0, v1, entries, err)
			}
			if _, entries, _ := st.Revocations(ctx, v1); entries != nil {
				t.Errorf("unchanged version: %v, want nil", entries)
			}
		})
	}
}

// TestRedisDown: an unreachable server is ErrUnavailable, quickly.
func TestRedisDown(t *testing.T) {
	p := testenv.StartRedis(t)
	r, err := NewRedis(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := r.Apply(ctx, []Op{{Key: "c", Add: 1, TTL: time.Minute}}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Apply: %v", err)
	}
	if _, _, err := r.Revocations(ctx, 0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Revocations: %v", err)
	}
}

func TestNewRedisHidesThePassword(t *testing.T) {
	_, err := NewRedis("redis://user:s3cret@[bad")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("%v", err)
	}
}
