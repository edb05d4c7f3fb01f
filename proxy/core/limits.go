package core

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/tileproxy/tileproxy/config"
)

// ErrLimited is matched by every refusal of a per-principal limit (429).
var ErrLimited = errors.New("too many requests")

// LimitedError is one such refusal: which limit, and when to come back.
type LimitedError struct {
	Reason     string // "streams" or "rate": the limited_total label
	RetryAfter time.Duration
}

func (e *LimitedError) Error() string { return "too many requests: " + e.Reason }

// Is makes errors.Is(err, ErrLimited) hold.
func (e *LimitedError) Is(target error) bool { return target == ErrLimited }

// RetryAfterSeconds is the Retry-After value for e: whole seconds, at
// least 1.
func (e *LimitedError) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(e.RetryAfter.Seconds())))
}

// Limits bound what one principal (auth.Principal.Key) may take from
// everyone else: concurrent uncached streams, and a request rate. Both are
// off when their setting is 0, and then cost nothing per request. One
// Limits serves every configuration a process runs in turn (Configure):
// a reload changes the numbers, never the streams and buckets held, so it
// cannot hand a principal a second allowance.
type Limits struct {
	now func() time.Time

	mu sync.Mutex // protects maxStreams and streams
	// maxStreams bounds each principal's streams; 0: no bound.
	maxStreams int
	// streams counts each principal's open streams; a principal leaves
	// the map with its last stream, so it holds at most one entry per
	// stream being sent.
	streams map[string]int

	// rate is the rate limit in force, swapped whole by Configure.
	rate atomic.Pointer[rateLimit]
}

// rateLimit is one setting of limits.rate with its buckets.
type rateLimit struct {
	limit rate.Limit
	burst int
	// buckets holds each principal's token bucket, at most
	// limits.max_principals of them; the least recently seen goes first,
	// which at worst hands a returning principal a full bucket.
	buckets *lru.Cache[string, *rate.Limiter]
}

// NewLimits builds the limits of cfg.
func NewLimits(cfg config.Limits, now func() time.Time) (*Limits, error) {
	l := &Limits{now: now, streams: map[string]int{}}
	return l, l.Configure(cfg)
}

// Configure applies cfg: a new stream bound counts the streams already
// open; a new rate keeps every principal's bucket, with the tokens it
// holds, and changes its rate and burst.
func (l *Limits) Configure(cfg config.Limits) error {
	l.mu.Lock()
	l.maxStreams = cfg.StreamsPerPrincipal
	l.mu.Unlock()
	if cfg.Rate <= 0 {
		l.rate.Store(nil)
		return nil
	}
	r := &rateLimit{limit: rate.Limit(cfg.Rate), burst: cfg.Burst}
	if r.burst == 0 {
		r.burst = max(1, int(math.Ceil(cfg.Rate)))
	}
	var err error
	if r.buckets, err = lru.New[string, *rate.Limiter](max(cfg.MaxPrincipals, 1)); err != nil {
		return err
	}
	if old := l.rate.Load(); old != nil {
		now := l.now()
		for _, k := range old.buckets.Keys() {
			if b, ok := old.buckets.Peek(k); ok {
				b.SetLimitAt(now, r.limit)
				b.SetBurstAt(now, r.burst)
				r.buckets.Add(k, b)
			}
		}
	}
	l.rate.Store(r)
	return nil
}

// allow takes one request from key's bucket, or says when one will be
// there.
func (l *Limits) allow(key string) error {
	r := l.rate.Load()
	if r == nil {
		return nil
	}
	b, ok := r.buckets.Get(key)
	if !ok {
		// Two first requests may race here; the loser's bucket is
		// replaced, which costs that principal at most one request.
		b = rate.NewLimiter(r.limit, r.burst)
		r.buckets.Add(key, b)
	}
	now := l.now()
	if b.AllowN(now, 1) {
		return nil
	}
	wait := time.Duration((1 - b.TokensAt(now)) / float64(r.limit) * float64(time.Second))
	return &LimitedError{Reason: "rate", RetryAfter: wait}
}

// openStream counts a stream for key until release is called, or refuses
// it when key already holds maxStreams.
func (l *Limits) openStream(key string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Counted with no bound too (only streams, never hits, come here),
	// so a reload that sets one counts what is already open.
	if l.maxStreams > 0 && l.streams[key] >= l.maxStreams {
		return nil, &LimitedError{Reason: "streams", RetryAfter: time.Second}
	}
	l.streams[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.streams[key]--; l.streams[key] <= 0 {
				delete(l.streams, key)
			}
		})
	}, nil
}
