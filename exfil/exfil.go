// Package exfil limits what one principal takes, across every replica
// that shares a store (docs/exfiltration.md): a quota of tiles per
// tileset per window, and sweep detection (distinct tiles per window)
// that logs, throttles or blocks.
//
// A request never waits on the store but once per lease. A replica
// leases tiles of a principal's quota from the store, which grants them
// atomically and never past the quota, and admits from its lease locally;
// it asks for the next lease in the background before this one runs out.
// So no replica admits a tile beyond the quota while the store answers
// (the over-admission bound is 0); what a lease leaves unused when a
// principal goes quiet is given back. Distinct tiles are settled with
// the store every SettleEvery. While the store is unreachable each
// replica counts on its own, as on_store_error says, and settles those
// counts when it is back.
package exfil

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/hll"
	"github.com/tileproxy/tileproxy/internal/store"
)

const (
	// MaxLease bounds one lease; a lease is also at most an eighth of
	// what is left of the quota, so that little sits unused on one
	// replica while another is refused.
	MaxLease = 1024
	// SettleEvery is how often a replica settles what it counted.
	SettleEvery = 100 * time.Millisecond
	// settleTimeout bounds one settle's round trip.
	settleTimeout = time.Second
	// logEvery spaces the log lines of a store outage.
	logEvery = time.Minute
	// sweepKick distinct tiles unsettled start a settle early; at most
	// maxPending are held for the next one.
	sweepKick  = 1024
	maxPending = 4096
	// idleAfter: a principal unseen this long gives its lease back.
	idleAfter = 2 * time.Minute
)

// Refusals; each is returned as a *Refusal.
var (
	// ErrQuota: the principal's quota of the tileset is used up (429).
	ErrQuota = errors.New("quota exceeded")
	// ErrSweep: the principal is blocked for sweeping (429).
	ErrSweep = errors.New("blocked for sweeping")
	// ErrThrottled: a throttled sweeper asked faster than throttle_rate (429).
	ErrThrottled = errors.New("throttled for sweeping")
	// ErrRate: over limits.rate, counted across replicas (429).
	ErrRate = errors.New("rate exceeded")
	// ErrStoreDown: the store is unreachable and on_store_error is deny (503).
	ErrStoreDown = errors.New("limits store unavailable")
)

// Refusal is one refusal: why, when to come back, and for a quota the
// RateLimit-Policy and RateLimit field values.
type Refusal struct {
	Err        error
	RetryAfter time.Duration
	// Policy and Limit are the IETF RateLimit-Policy and RateLimit field
	// values (draft-ietf-httpapi-ratelimit-headers); "" but for quotas.
	Policy, Limit string
}

func (r *Refusal) Error() string { return r.Err.Error() }

// Unwrap makes errors.Is(err, ErrQuota) and the like hold.
func (r *Refusal) Unwrap() error { return r.Err }

// RetryAfterSeconds is the Retry-After value: whole seconds, at least 1.
func (r *Refusal) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(r.RetryAfter.Seconds())))
}

// Reason is the bounded name of a refusal, for metrics and logs: quota,
// sweep, throttle or store; "" for other errors.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrQuota):
		return "quota"
	case errors.Is(err, ErrSweep):
		return "sweep"
	case errors.Is(err, ErrThrottled):
		return "throttle"
	case errors.Is(err, ErrRate):
		return "rate"
	case errors.Is(err, ErrStoreDown):
		return "store"
	}
	return ""
}

// Config is what the limits enforce.
type Config struct {
	// Quotas are by tileset; a tileset without one has no quota.
	Quotas map[string]config.Quota
	// Sweep detection is off when Distinct is 0.
	Sweep config.Sweep
	// Deny refuses requests (503) while the store is unreachable;
	// otherwise each replica limits on its own counts until it is back.
	Deny bool
	// Rate is limits.rate counted across replicas (in windows of a
	// second): set with a shared store; 0 leaves the rate to each
	// replica's token bucket.
	Rate float64

	byTileset []namedQuota // Quotas, as Configure compiles them
	// rateQuota and throttleQuota are Rate and Sweep.ThrottleRate as
	// windows, computed once by Configure.
	rateQuota, throttleQuota config.Quota
}

// FromConfig is the Config of a tileproxy configuration.
func FromConfig(c *config.Config) Config {
	out := Config{Quotas: map[string]config.Quota{}, Deny: c.Limits.OnStoreError == config.OnStoreErrorDeny}
	for i := range c.Tilesets {
		if q := c.QuotaOf(&c.Tilesets[i]); q != nil {
			out.Quotas[c.Tilesets[i].Name] = *q
		}
	}
	if s := c.Limits.Sweep; s != nil && s.Distinct > 0 {
		out.Sweep = *s
	}
	if c.Limits.RedisStore() {
		out.Rate = c.Limits.Rate
	}
	return out
}

// On reports whether any limit is on.
func (c *Config) On() bool { return len(c.Quotas) > 0 || c.Sweep.Distinct > 0 || c.Rate > 0 }

// quota is tileset's quota. A scan, not a map: a configuration has a
// few tilesets, and this runs on every hit.
func (c *Config) quota(tileset string) (config.Quota, bool) {
	for i := range c.byTileset {
		if c.byTileset[i].name == tileset {
			return c.byTileset[i].q, true
		}
	}
	return config.Quota{}, false
}

type namedQuota struct {
	name string
	q    config.Quota
}

// Metrics is what the limits report.
type Metrics interface {
	// Limited counts a refusal by reason (quota, sweep, throttle, store).
	Limited(reason string)
	// Sweep counts a principal flagged for sweeping, by action.
	Sweep(action string)
	// StoreUp says whether the last settle reached the store.
	StoreUp(up bool)
}

// Deps are what a Limiter works with.
type Deps struct {
	Store   store.Store
	Now     func() time.Time
	Metrics Metrics
	Log     *slog.Logger
}

// Limiter enforces a Config. One Limiter serves every configuration a
// process runs in turn (Configure): a reload changes the numbers, never
// what was counted.
type Limiter struct {
	deps Deps
	cfg  atomic.Pointer[Config]

	principals sync.Map // principal key -> *principal

	kick chan struct{} // a settle is wanted now
	// settled is closed, and replaced, after every settle round.
	settledMu sync.Mutex
	settled   chan struct{}

	// settleMu makes settles one at a time (Run's, and tests' own).
	settleMu    sync.Mutex
	down        atomic.Bool
	lastDownLog time.Time // under settleMu
	done        chan struct{}
	stopped     chan struct{}
}

// principal is what a replica knows of one principal.
type principal struct {
	key string

	mu sync.Mutex
	// gone: dropped from the map while idle; a request that found it
	// just before looks it up again.
	gone     bool
	counters []*counter // the current window's, one per tileset with a quota
	retired  []*counter // earlier windows' with tiles not yet settled
	lastSeen time.Time

	sweepWindow int64
	items       hashSet    // distinct tiles not yet settled
	local       hll.Sketch // this window's tiles while the store is down
	distinct    int64      // the store's count at the last settle
	flagged     bool
}

// counter is one principal's count of one tileset in one window.
type counter struct {
	tileset string
	window  int64
	per     time.Duration
	quota   int64
	// known is the store's total at the last settle, leases of every
	// replica included; lease is what this replica may still admit of
	// what the store granted it; unsettled were admitted while the store
	// was unreachable, to be added when it is back.
	known, lease, unsettled int64
	// asked: a lease is being asked for (or is wanted at the next
	// settle); learned: a settle has answered for this counter.
	asked, learned bool
}

// wantLease is the next lease to ask for.
func (c *counter) wantLease() int64 {
	return max(1, min(MaxLease, (c.quota-c.known)/8))
}

// New builds a Limiter; Run settles its counts.
func New(cfg Config, deps Deps) *Limiter {
	l := &Limiter{deps: deps, kick: make(chan struct{}, 1), settled: make(chan struct{}), done: make(chan struct{}), stopped: make(chan struct{})}
	l.Configure(cfg)
	deps.Metrics.StoreUp(true)
	return l
}

// Configure applies cfg from the next request on.
func (l *Limiter) Configure(cfg Config) {
	if cfg.Rate > 0 {
		cfg.rateQuota = perSecond(cfg.Rate)
	}
	if cfg.Sweep.ThrottleRate > 0 {
		cfg.throttleQuota = perSecond(cfg.Sweep.ThrottleRate)
	}
	cfg.byTileset = nil
	for name, q := range cfg.Quotas {
		cfg.byTileset = append(cfg.byTileset, namedQuota{name, q})
	}
	l.cfg.Store(&cfg)
}

// window is the number of the fixed window of length per that holds t:
// windows start at multiples of per since the Unix epoch, the same on
// every replica.
func window(t time.Time, per time.Duration) int64 { return t.UnixNano() / int64(per) }

// windowEnd is when window w of length per ends.
func windowEnd(w int64, per time.Duration) time.Time { return time.Unix(0, (w+1)*int64(per)) }

// Ticket is a tile admitted by Take; Return gives it back when the answer
// was not a 200 or 206.
type Ticket struct {
	p *principal
	c *counter
	// unsettled: admitted while the store was unreachable, not from a
	// lease.
	unsettled bool
}

// Return uncounts the tile: its answer was not a tile (a 304, an error).
func (t Ticket) Return() {
	if t.c == nil {
		return
	}
	t.p.mu.Lock()
	if t.unsettled {
		t.c.unsettled--
	} else {
		t.c.lease++
	}
	t.p.mu.Unlock()
}

// Take admits one tile of tileset at path for the principal key at now
// (the request's start: the caller has read the clock already), or
// refuses it with a *Refusal. Its count stands unless the Ticket is
// returned.
func (l *Limiter) Take(ctx context.Context, now time.Time, key, tileset, path string) (Ticket, error) {
	cfg := l.cfg.Load()
	q, quota := cfg.quota(tileset)
	sweep := cfg.Sweep.Distinct > 0
	if !quota && !sweep && cfg.Rate == 0 {
		return Ticket{}, nil
	}
	if cfg.Deny && l.down.Load() {
		l.deps.Metrics.Limited("store")
		return Ticket{}, &Refusal{Err: ErrStoreDown, RetryAfter: time.Second}
	}
	p := l.principal(key)
	for {
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			p = l.principal(key)
			continue
		}
		p.lastSeen = now
		var h uint64
		if sweep {
			if err := l.sweepCheck(p, &cfg.Sweep, now); err != nil {
				p.mu.Unlock()
				l.deps.Metrics.Limited(Reason(err))
				return Ticket{}, err
			}
			h = tileHash(tileset, path)
		}
		// Each counter that applies takes one: the throttle of a flagged
		// sweeper, the cluster-wide rate, the tileset's quota.
		var checks [3]check
		n := 0
		if p.flagged && cfg.Sweep.Action == config.SweepThrottle {
			checks[n] = check{c: p.counter(throttleName, &cfg.throttleQuota, now), err: ErrThrottled}
			n++
		}
		if cfg.Rate > 0 {
			checks[n] = check{c: p.counter(rateName, &cfg.rateQuota, now), err: ErrRate}
			n++
		}
		if quota {
			checks[n] = check{c: p.counter(tileset, &q, now), err: ErrQuota}
			n++
		}
		kick := false
		var refused error
		wait := false
		for i := range n {
			checks[i].got = l.take(checks[i].c, &kick)
			switch checks[i].got {
			case mustWait:
				wait = true
			case refusedTile:
				refused = limitRefusal(checks[i].err, checks[i].c, now)
			}
			if wait || refused != nil {
				for j := range i {
					checks[j].c.giveBack(checks[j].got)
				}
				break
			}
		}
		if refused != nil {
			p.mu.Unlock()
			l.deps.Metrics.Limited(Reason(refused))
			return Ticket{}, refused
		}
		if wait {
			// No lease: wait for one (the first request of a principal
			// on a replica in a window, or one faster than leases).
			done := l.settledChan()
			p.mu.Unlock()
			l.kickSettle()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return Ticket{}, ctx.Err()
			}
		}
		var t Ticket
		if quota {
			t = Ticket{p: p, c: checks[n-1].c, unsettled: checks[n-1].got == admittedUnsettled}
		}
		if sweep {
			if p.items.len() < maxPending {
				p.items.add(h)
			}
			if l.down.Load() {
				p.local.Add(hll.Mix(h))
			}
			kick = kick || p.items.len() == sweepKick
		}
		p.mu.Unlock()
		if kick {
			l.kickSettle()
		}
		return t, nil
	}
}

// The counters of the rate and the throttle, beside the tilesets' (whose
// names never start with ~).
const (
	rateName     = "~rate"
	throttleName = "~throttle"
)

// perSecond is the window of a rate of r requests per second: r of them
// a second, or one every 1/r seconds when r < 1.
func perSecond(r float64) config.Quota {
	if r >= 1 {
		return config.Quota{Tiles: int64(math.Ceil(r)), Per: config.Duration(time.Second)}
	}
	return config.Quota{Tiles: 1, Per: config.Duration(time.Duration(math.Ceil(1/r)) * time.Second)}
}

// check is one counter a request takes from.
type check struct {
	c   *counter
	err error // the refusal when the counter is used up
	got outcome
}

// outcome is what take did.
type outcome int

const (
	admitted          outcome = iota // from the lease
	admittedUnsettled                // counted here alone: the store is unreachable
	refusedTile                      // the counter is used up
	mustWait                         // no lease: one is asked for
)

// take takes one from c (p.mu held), and sets kick when the next lease
// should be asked for now.
func (l *Limiter) take(c *counter, kick *bool) outcome {
	switch {
	case c.lease > 0:
		c.lease--
		if !c.asked && c.lease < c.wantLease()/2 {
			c.asked, *kick = true, true // the next lease, before this one runs out
		}
		return admitted
	case c.learned && c.known >= c.quota:
		return refusedTile
	case !l.down.Load() && !l.isClosed():
		c.asked = true
		return mustWait
	case c.known+c.unsettled >= c.quota:
		return refusedTile // the store is unreachable: this replica's own count
	}
	c.unsettled++
	return admittedUnsettled
}

// giveBack undoes a take that admitted.
func (c *counter) giveBack(o outcome) {
	switch o {
	case admitted:
		c.lease++
	case admittedUnsettled:
		c.unsettled--
	}
}

// principal is key's state, made on its first request.
func (l *Limiter) principal(key string) *principal {
	if v, ok := l.principals.Load(key); ok {
		return v.(*principal)
	}
	v, _ := l.principals.LoadOrStore(key, &principal{key: key})
	return v.(*principal)
}

// counter is p's counter of tileset for now's window (p.mu held).
func (p *principal) counter(tileset string, q *config.Quota, now time.Time) *counter {
	per := q.Per.Duration()
	w := window(now, per)
	for i, c := range p.counters {
		if c.tileset != tileset {
			continue
		}
		if c.window == w && c.per == per {
			c.quota = q.Tiles // a reload may change it
			return c
		}
		if c.unsettled != 0 {
			p.retired = append(p.retired, c) // settled once the store answers
		}
		p.counters[i] = &counter{tileset: tileset, window: w, per: per, quota: q.Tiles}
		return p.counters[i]
	}
	c := &counter{tileset: tileset, window: w, per: per, quota: q.Tiles}
	p.counters = append(p.counters, c)
	return c
}

// limitRefusal is the 429 of a used-up counter: back when its window
// ends; a quota's carries the RateLimit fields (p.mu held).
func limitRefusal(err error, c *counter, now time.Time) *Refusal {
	reset := windowEnd(c.window, c.per).Sub(now)
	r := &Refusal{Err: err, RetryAfter: reset}
	if err == ErrQuota {
		secs := max(1, int64(math.Ceil(reset.Seconds())))
		r.Policy = `"quota";q=` + strconv.FormatInt(c.quota, 10) + ";w=" + strconv.FormatInt(int64(c.per/time.Second), 10)
		r.Limit = `"quota";r=0;t=` + strconv.FormatInt(secs, 10)
	}
	return r
}

// sweepCheck rolls p's sweep window over and refuses a flagged principal
// as the action says (p.mu held).
func (l *Limiter) sweepCheck(p *principal, s *config.Sweep, now time.Time) error {
	per := s.Per.Duration()
	if w := window(now, per); w != p.sweepWindow {
		p.sweepWindow, p.flagged, p.distinct, p.local = w, false, 0, hll.Sketch{}
		p.items.reset()
	}
	if !p.flagged {
		return nil
	}
	if s.Action == config.SweepBlock {
		return &Refusal{Err: ErrSweep, RetryAfter: windowEnd(p.sweepWindow, per).Sub(now)}
	}
	return nil // throttle: a counter of its own (Take)
}

// tileHash names a tile for sweep detection, the same on every replica
// (FNV-1a: no per-process seed).
func tileHash(tileset, path string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(tileset) {
		h = (h ^ uint64(tileset[i])) * 1099511628211
	}
	h = (h ^ '/') * 1099511628211
	for i := range len(path) {
		h = (h ^ uint64(path[i])) * 1099511628211
	}
	return h
}

func (l *Limiter) kickSettle() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *Limiter) settledChan() chan struct{} {
	l.settledMu.Lock()
	defer l.settledMu.Unlock()
	return l.settled
}

// Run settles every SettleEvery, or when asked, until ctx ends or Close
// is called; then it settles once more, so that what was counted is not
// lost.
func (l *Limiter) Run(ctx context.Context) {
	defer close(l.stopped)
	t := time.NewTicker(SettleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Settle(context.WithoutCancel(ctx))
			return
		case <-l.done:
			l.Settle(ctx)
			return
		case <-t.C:
		case <-l.kick:
		}
		l.Settle(ctx)
	}
}

// Close stops Run after a last settle.
func (l *Limiter) Close() {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	<-l.stopped
}

// settling is one op of a settle and what it came from.
type settling struct {
	p *principal
	c *counter // nil for the principal's distinct tiles
	// lease: the op asks for a lease (else it adds n unsettled or
	// returned tiles).
	lease bool
	n     int64
}

// Settle sends what was counted since the last settle to the store in
// one round trip and learns the totals. Run calls it; tests call it to
// step.
func (l *Limiter) Settle(ctx context.Context) {
	l.settleMu.Lock()
	defer l.settleMu.Unlock()
	cfg := l.cfg.Load()
	now := l.deps.Now()
	var ops []store.Op
	var from []settling
	l.principals.Range(func(k, v any) bool {
		p := v.(*principal)
		p.mu.Lock()
		defer p.mu.Unlock()
		idle := now.Sub(p.lastSeen) > idleAfter
		for _, c := range p.counters {
			switch {
			case c.unsettled != 0:
				// Counted while the store was away: added as it is, past
				// the quota or not, so counting resumes where it was.
				ops = append(ops, store.Op{Key: quotaKey(p.key, c), Add: c.unsettled, TTL: c.per + time.Minute})
				from = append(from, settling{p: p, c: c, n: c.unsettled})
			case idle && c.lease > 0:
				// A quiet principal's lease goes back, so other
				// replicas can use it.
				ops = append(ops, store.Op{Key: quotaKey(p.key, c), Add: -c.lease, TTL: c.per + time.Minute})
				from = append(from, settling{p: p, c: c, n: -c.lease})
			case c.asked:
				ops = append(ops, store.Op{Key: quotaKey(p.key, c), Add: c.wantLease(), Cap: c.quota, TTL: c.per + time.Minute})
				from = append(from, settling{p: p, c: c, lease: true})
			}
		}
		for _, c := range p.retired {
			ops = append(ops, store.Op{Key: quotaKey(p.key, c), Add: c.unsettled, TTL: c.per + time.Minute})
			from = append(from, settling{p: p, c: c, n: c.unsettled})
		}
		if s := cfg.Sweep; s.Distinct > 0 && p.items.len() > 0 {
			items := p.items.appendTo(make([]uint64, 0, p.items.len()))
			p.items.reset()
			ops = append(ops, store.Op{Key: "s:" + p.key + ":" + strconv.FormatInt(int64(s.Per.Duration()/time.Second), 10) + ":" + strconv.FormatInt(p.sweepWindow, 10), Distinct: true, Items: items, TTL: s.Per.Duration() + time.Minute})
			from = append(from, settling{p: p})
		}
		// A flag lasts until its window ends: a principal flagged in an
		// earlier window is no reason to stay.
		flagged := p.flagged && cfg.Sweep.Distinct > 0 && window(now, cfg.Sweep.Per.Duration()) == p.sweepWindow
		if idle && len(p.retired) == 0 && p.items.len() == 0 && !flagged && allSettled(p.counters) && !hasOps(from, p) {
			p.gone = true
			l.principals.Delete(k) // back as new: its totals are in the store
		}
		return true
	})
	var res []store.Result
	var err error
	if len(ops) == 0 {
		// Nothing to send: a probe, so that an outage (and the end of
		// one) shows even while nothing is counted, as under deny.
		ops = []store.Op{{Key: "probe", TTL: time.Minute}}
	}
	actx, cancel := context.WithTimeout(ctx, settleTimeout)
	res, err = l.deps.Store.Apply(actx, ops)
	cancel()
	l.settledResult(cfg, from, res, err, now)
	l.settledMu.Lock()
	close(l.settled)
	l.settled = make(chan struct{})
	l.settledMu.Unlock()
}

// quotaKey names c in the store: principal, tileset, window length and
// number, so that a reload that changes per starts a counter of its own.
func quotaKey(principal string, c *counter) string {
	return "q:" + principal + ":" + c.tileset + ":" + strconv.FormatInt(int64(c.per/time.Second), 10) + ":" + strconv.FormatInt(c.window, 10)
}

func allSettled(cs []*counter) bool {
	for _, c := range cs {
		if c.unsettled != 0 || c.lease != 0 || c.asked {
			return false
		}
	}
	return true
}

// hasOps reports whether this settle sends something of p's.
func hasOps(from []settling, p *principal) bool {
	return len(from) > 0 && from[len(from)-1].p == p
}

// settledResult applies a settle's answer, or its failure: the counts go
// back to pending, to be sent again, and the replica limits on its own.
func (l *Limiter) settledResult(cfg *Config, from []settling, res []store.Result, err error, now time.Time) {
	if err != nil {
		if !l.down.Swap(true) || now.Sub(l.lastDownLog) >= logEvery {
			mode := "per-replica limits until it is back (on_store_error: allow)"
			if cfg.Deny {
				mode = "refusing limited requests with 503 (on_store_error: deny)"
			}
			l.deps.Log.Warn("limits store unreachable: "+mode, "err", err)
			l.lastDownLog = now
		}
		l.deps.Metrics.StoreUp(false)
	} else if l.down.Swap(false) {
		l.deps.Log.Info("limits store reachable again: counting resumes")
		l.deps.Metrics.StoreUp(true)
	}
	for i, s := range from {
		s.p.mu.Lock()
		switch {
		case s.c != nil && err != nil:
			// Asked again at the next settle; counts stay unsettled.
		case s.c != nil && s.lease:
			s.c.asked = false
			s.c.lease += res[i].Added
			s.c.known, s.c.learned = res[i].Total, true
		case s.c != nil:
			if s.n > 0 {
				s.c.unsettled -= s.n
			} else {
				s.c.lease += s.n // given back
			}
			s.c.known, s.c.learned = res[i].Total, true
			s.p.retired = slices.DeleteFunc(s.p.retired, func(c *counter) bool { return c == s.c && c.unsettled == 0 })
		case err != nil:
			// Distinct tiles of an outage are judged by this replica's
			// own sketch (added to from now on, see Take).
			if cfg.Sweep.Distinct > 0 && s.p.local.Count() >= cfg.Sweep.Distinct {
				l.flag(s.p, cfg, s.p.local.Count())
			}
		default:
			s.p.distinct = res[i].Total
			if cfg.Sweep.Distinct > 0 && res[i].Total >= cfg.Sweep.Distinct {
				l.flag(s.p, cfg, res[i].Total)
			}
		}
		s.p.mu.Unlock()
	}
}

// flag marks p a sweeper for the rest of its window (p.mu held).
func (l *Limiter) flag(p *principal, cfg *Config, distinct int64) {
	if p.flagged {
		return
	}
	p.flagged = true
	l.deps.Metrics.Sweep(cfg.Sweep.Action)
	l.deps.Log.Warn("sweep detected", "principal", p.key, "distinct", distinct,
		"window", fmt.Sprint(cfg.Sweep.Per.Duration()), "action", cfg.Sweep.Action)
}

func (l *Limiter) isClosed() bool {
	select {
	case <-l.stopped:
		return true
	default:
		return false
	}
}

// Down reports whether the last settle failed to reach the store.
func (l *Limiter) Down() bool { return l.down.Load() }
