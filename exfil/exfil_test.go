package exfil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/store"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// clock is a fake clock tests step by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// fakeMetrics counts what the limits report.
type fakeMetrics struct {
	mu      sync.Mutex
	limited map[string]int
	sweeps  map[string]int
	up      bool
}

func (m *fakeMetrics) Limited(r string) { m.mu.Lock(); m.limited[r]++; m.mu.Unlock() }
func (m *fakeMetrics) Sweep(a string)   { m.mu.Lock(); m.sweeps[a]++; m.mu.Unlock() }
func (m *fakeMetrics) StoreUp(up bool)  { m.mu.Lock(); m.up = up; m.mu.Unlock() }
func (m *fakeMetrics) get(f func() int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f()
}

// flaky is a store that fails while down is set.
type flaky struct {
	store.Store
	down atomic.Bool
}

func (f *flaky) Apply(ctx context.Context, ops []store.Op) ([]store.Result, error) {
	if f.down.Load() {
		return nil, fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return f.Store.Apply(ctx, ops)
}

type rig struct {
	clk       *clock
	metrics   *fakeMetrics
	st        store.Store
	principal string
}

func newRig() *rig {
	clk := &clock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	return &rig{principal: "alice", clk: clk, metrics: &fakeMetrics{limited: map[string]int{}, sweeps: map[string]int{}}, st: store.NewMemory(clk.now)}
}

// limiter is a Limiter on the rig's store, settling in the background.
func (r *rig) limiter(t *testing.T, cfg Config) *Limiter {
	l := New(cfg, Deps{Store: r.st, Now: r.clk.now, Metrics: r.metrics, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	go l.Run(t.Context())
	t.Cleanup(l.Close)
	return l
}

func quota(tiles int64, per time.Duration) Config {
	return Config{Quotas: map[string]config.Quota{"city": {Tiles: tiles, Per: config.Duration(per)}}}
}

func TestQuota(t *testing.T) {
	r := newRig()
	l := r.limiter(t, quota(200, 24*time.Hour))
	ctx := t.Context()
	for i := range 200 {
		if _, err := l.Take(ctx, r.clk.now(), "alice", "city", fmt.Sprintf("1/0/%d.png", i)); err != nil {
			t.Fatalf("tile %d: %v", i, err)
		}
	}
	_, err := l.Take(ctx, r.clk.now(), "alice", "city", "1/0/0.png")
	var ref *Refusal
	if !errors.As(err, &ref) || !errors.Is(err, ErrQuota) {
		t.Fatalf("tile 201: %v, want a quota refusal", err)
	}
	// 10:00 on a 24-hour window: it frees room at midnight UTC.
	if got := ref.RetryAfterSeconds(); got != 14*3600 {
		t.Errorf("Retry-After %d, want %d", got, 14*3600)
	}
	if ref.Policy != `"quota";q=200;w=86400` || ref.Limit != `"quota";r=0;t=50400` {
		t.Errorf("RateLimit-Policy %q, RateLimit %q", ref.Policy, ref.Limit)
	}
	// Another principal, and another tileset, are not affected.
	if _, err := l.Take(ctx, r.clk.now(), "bob", "city", "1/0/0.png"); err != nil {
		t.Errorf("bob: %v", err)
	}
	if _, err := l.Take(ctx, r.clk.now(), "alice", "other", "1/0/0.png"); err != nil {
		t.Errorf("a tileset without a quota: %v", err)
	}
	if n := r.metrics.get(func() int { return r.metrics.limited["quota"] }); n != 1 {
		t.Errorf("limited{quota} = %d", n)
	}
	// The next window starts afresh.
	r.clk.add(14 * time.Hour)
	if _, err := l.Take(ctx, r.clk.now(), "alice", "city", "1/0/0.png"); err != nil {
		t.Errorf("next window: %v", err)
	}
}

// TestReturned: a tile whose answer was not a tile (304, 404) is given
// back and does not count.
func TestReturned(t *testing.T) {
	r := newRig()
	l := r.limiter(t, quota(3, time.Hour))
	for i := range 10 {
		tk, err := l.Take(t.Context(), r.clk.now(), "alice", "city", "0/0/0.png")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		tk.Return()
	}
	for i := range 3 {
		if _, err := l.Take(t.Context(), r.clk.now(), "alice", "city", "0/0/0.png"); err != nil {
			t.Fatalf("tile %d: %v", i, err)
		}
	}
	if _, err := l.Take(t.Context(), r.clk.now(), "alice", "city", "0/0/0.png"); !errors.Is(err, ErrQuota) {
		t.Fatalf("tile 4: %v", err)
	}
}

// TestOverAdmissionBound: replicas sharing a store, taking as fast as
// they can from concurrent requests, admit the quota exactly: the store
// grants leases, never past it.
func TestOverAdmissionBound(t *testing.T) {
	t.Run("memory", func(t *testing.T) { overAdmission(t, newRig()) })
	t.Run("redis", func(t *testing.T) {
		st, err := store.NewRedis(testenv.Redis(t, 1))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		r := newRig()
		r.st = st
		r.principal = fmt.Sprint("alice-", time.Now().UnixNano()) // the shared Redis outlives a run
		overAdmission(t, r)
	})
}

func overAdmission(t *testing.T, r *rig) {
	const q, replicas, workers = 1000, 3, 4
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range replicas {
		l := r.limiter(t, quota(q, time.Hour))
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10*q; i++ { // bounded: refusals end it long before
					if _, err := l.Take(t.Context(), r.clk.now(), r.principal, "city", "0/0/0.png"); err != nil {
						if !errors.Is(err, ErrQuota) {
							t.Error(err)
						}
						return
					}
					admitted.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("admitted %d on a quota of %d over %d replicas", admitted.Load(), q, replicas)
	if got := admitted.Load(); got != q {
		t.Errorf("admitted %d of a quota of %d over %d replicas", got, q, replicas)
	}
}

// TestStoreOutage: under allow, a replica limits on its own counts while
// the store is down, and settles them when it is back; under deny it
// refuses.
func TestStoreOutage(t *testing.T) {
	for _, deny := range []bool{false, true} {
		t.Run(fmt.Sprint("deny=", deny), func(t *testing.T) {
			r := newRig()
			f := &flaky{Store: r.st}
			r.st = f
			cfg := quota(100, time.Hour)
			cfg.Deny = deny
			l := r.limiter(t, cfg)
			ctx := t.Context()
			for range 10 {
				if _, err := l.Take(ctx, r.clk.now(), "alice", "city", "0/0/0.png"); err != nil {
					t.Fatal(err)
				}
			}
			f.down.Store(true)
			l.Settle(ctx)
			if !l.Down() || r.metrics.get(func() int { return map[bool]int{true: 1}[r.metrics.up] }) != 0 {
				t.Fatal("a failed settle did not mark the store down")
			}
			n := 0
			for range 200 {
				_, err := l.Take(ctx, r.clk.now(), "alice", "city", "0/0/0.png")
				if err != nil {
					want := ErrQuota
					if deny {
						want = ErrStoreDown
					}
					if !errors.Is(err, want) {
						t.Fatalf("while down: %v, want %v", err, want)
					}
					continue
				}
				n++
			}
			if want := map[bool]int{false: 90, true: 0}[deny]; n != want {
				t.Errorf("while down: %d admitted, want %d", n, want)
			}
			f.down.Store(false)
			l.Settle(ctx)
			if l.Down() {
				t.Fatal("still down after a settle reached the store")
			}
			// Counting resumed, nothing lost: the store holds every tile
			// answered, and what this replica still holds of its lease.
			v, _ := l.principals.Load("alice")
			p := v.(*principal)
			p.mu.Lock()
			left := p.counters[0].lease
			p.mu.Unlock()
			res, _ := r.st.Apply(ctx, []store.Op{{Key: quotaKey("alice", &counter{tileset: "city", per: time.Hour, window: window(r.clk.now(), time.Hour)}), TTL: time.Hour}})
			if want := int64(10+n) + left; res[0].Total != want {
				t.Errorf("store holds %d, want %d", res[0].Total, want)
			}
		})
	}
}

func sweepCfg(action string) Config {
	return Config{Sweep: config.Sweep{Distinct: 2000, Per: config.Duration(time.Hour), Action: action, ThrottleRate: 5}}
}

// TestSweep: a sweep of 5,000 distinct tiles is flagged and blocked;
// 5,000 re-reads of one view are not.
func TestSweep(t *testing.T) {
	r := newRig()
	l := r.limiter(t, sweepCfg(config.SweepBlock))
	ctx := t.Context()
	view := 0
	for i := range 5000 {
		path := fmt.Sprintf("14/%d/%d.png", 8000+i%6, 5000+i%4) // 24 tiles, re-read
		if _, err := l.Take(ctx, r.clk.now(), "viewer", "city", path); err != nil {
			t.Fatalf("re-read %d: %v", i, err)
		}
		view++
	}
	blocked := -1
	for i := range 5000 {
		_, err := l.Take(ctx, r.clk.now(), "sweeper", "city", fmt.Sprintf("14/%d/%d.png", i%100, i/100))
		if err != nil {
			if !errors.Is(err, ErrSweep) {
				t.Fatalf("tile %d: %v", i, err)
			}
			blocked = i
			break
		}
		if i%200 == 0 {
			l.Settle(ctx) // as the background settle would, at its pace
		}
	}
	if blocked < 2000 || blocked > 2000+200 {
		t.Fatalf("the sweeper was blocked at tile %d, want soon after 2000", blocked)
	}
	if n := r.metrics.get(func() int { return r.metrics.sweeps["block"] }); n != 1 {
		t.Errorf("sweeps{block} = %d", n)
	}
	if _, err := l.Take(ctx, r.clk.now(), "viewer", "city", "14/8000/5000.png"); err != nil {
		t.Errorf("the viewer after 5,000 re-reads: %v", err)
	}
	// Blocked until the window ends, then free again.
	r.clk.add(time.Hour)
	if _, err := l.Take(ctx, r.clk.now(), "sweeper", "city", "0/0/0.png"); err != nil {
		t.Errorf("next window: %v", err)
	}
}

// TestSweepThrottle: a flagged principal is cut to throttle_rate.
func TestSweepThrottle(t *testing.T) {
	r := newRig()
	l := r.limiter(t, sweepCfg(config.SweepThrottle))
	ctx := t.Context()
	for i := range 2100 {
		l.Take(ctx, r.clk.now(), "sweeper", "city", fmt.Sprintf("14/%d/%d.png", i%100, i/100))
	}
	l.Settle(ctx)
	r.clk.add(time.Second) // whatever the loop took of the bucket is back
	ok := 0
	for i := range 100 {
		if _, err := l.Take(ctx, r.clk.now(), "sweeper", "city", fmt.Sprintf("15/%d/0.png", i)); err == nil {
			ok++
		} else if !errors.Is(err, ErrThrottled) {
			t.Fatal(err)
		}
	}
	if ok != 5 { // the burst: one second's worth
		t.Errorf("%d of 100 admitted in one instant at throttle_rate 5", ok)
	}
	r.clk.add(time.Second)
	if _, err := l.Take(ctx, r.clk.now(), "sweeper", "city", "16/0/0.png"); err != nil {
		t.Errorf("a second later: %v", err)
	}
}

// TestConcurrent runs takes, returns and settles together (for -race).
func TestConcurrent(t *testing.T) {
	r := newRig()
	cfg := quota(1_000_000, time.Hour)
	cfg.Sweep = sweepCfg(config.SweepLog).Sweep
	l := r.limiter(t, cfg)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				tk, err := l.Take(t.Context(), r.clk.now(), fmt.Sprint("p", i%7), "city", fmt.Sprintf("%d/%d/0.png", w, i))
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					tk.Return()
				}
				if i%500 == 0 {
					r.clk.add(time.Minute)
				}
			}
		}()
	}
	wg.Wait()
}

// TestRateAcrossReplicas: with a shared store, limits.rate holds for the
// cluster: two replicas admit rate requests a second between them.
func TestRateAcrossReplicas(t *testing.T) {
	r := newRig()
	a, b := r.limiter(t, Config{Rate: 10}), r.limiter(t, Config{Rate: 10})
	ok := 0
	for i := range 100 {
		l := a
		if i%2 == 1 {
			l = b
		}
		if _, err := l.Take(t.Context(), r.clk.now(), "alice", "city", "0/0/0.png"); err == nil {
			ok++
		} else if !errors.Is(err, ErrRate) || Reason(err) != "rate" {
			t.Fatal(err)
		}
	}
	if ok != 10 {
		t.Errorf("%d of 100 admitted in one second at rate 10 over two replicas", ok)
	}
	r.clk.add(time.Second)
	if _, err := a.Take(t.Context(), r.clk.now(), "alice", "city", "0/0/0.png"); err != nil {
		t.Errorf("the next second: %v", err)
	}
}

// TestIdlePrincipalsGo: a principal quiet for longer than idleAfter is
// forgotten (its counts are in the store), a flagged one once its sweep
// window is over, so the map does not grow with every principal ever seen.
func TestIdlePrincipalsGo(t *testing.T) {
	r := newRig()
	l := r.limiter(t, sweepCfg(config.SweepBlock))
	ctx := t.Context()
	l.Take(ctx, r.clk.now(), "quiet", "city", "0/0/0.png")
	for i := range 2100 {
		l.Take(ctx, r.clk.now(), "sweeper", "city", fmt.Sprintf("14/%d/%d.png", i%100, i/100))
	}
	l.Settle(ctx)
	present := func(key string) bool { _, ok := l.principals.Load(key); return ok }
	r.clk.add(idleAfter + time.Second) // still the same hour: the sweeper stays flagged
	l.Settle(ctx)
	l.Settle(ctx)
	if present("quiet") || !present("sweeper") {
		t.Fatalf("after %v idle: quiet %v, sweeper %v", idleAfter, present("quiet"), present("sweeper"))
	}
	r.clk.add(time.Hour) // the sweep window is over
	l.Settle(ctx)
	l.Settle(ctx)
	if present("sweeper") {
		t.Error("a sweeper flagged in an earlier window was kept")
	}
}
