package core

import (
	"errors"
	"math"
	"sync"
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

// principals bounds what one principal (auth.Principal.Key) may take from
// everyone else: concurrent uncached streams, and a request rate. Both are
// off when their setting is 0, and then cost nothing per request.
type principals struct {
	now func() time.Time

	maxStreams int // 0: no bound
	mu         sync.Mutex
	// streams counts each principal's open streams; a principal leaves
	// the map with its last stream, so it holds at most one entry per
	// stream being sent.
	streams map[string]int

	limit rate.Limit
	burst int
	// buckets holds each principal's token bucket, at most
	// limits.max_principals of them; the least recently seen goes first,
	// which at worst hands a returning principal a full bucket.
	buckets *lru.Cache[string, *rate.Limiter] // nil: no rate limit
}

func newPrincipals(cfg config.Limits, now func() time.Time) (*principals, error) {
	l := &principals{now: now, maxStreams: cfg.StreamsPerPrincipal, streams: map[string]int{}}
	if cfg.Rate > 0 {
		l.limit = rate.Limit(cfg.Rate)
		l.burst = cfg.Burst
		if l.burst == 0 {
			l.burst = max(1, int(math.Ceil(cfg.Rate)))
		}
		var err error
		if l.buckets, err = lru.New[string, *rate.Limiter](max(cfg.MaxPrincipals, 1)); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// allow takes one request from key's bucket, or says when one will be
// there.
func (l *principals) allow(key string) error {
	if l.buckets == nil {
		return nil
	}
	b, ok := l.buckets.Get(key)
	if !ok {
		// Two first requests may race here; the loser's bucket is
		// replaced, which costs that principal at most one request.
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets.Add(key, b)
	}
	now := l.now()
	if b.AllowN(now, 1) {
		return nil
	}
	wait := time.Duration((1 - b.TokensAt(now)) / float64(l.limit) * float64(time.Second))
	return &LimitedError{Reason: "rate", RetryAfter: wait}
}

// openStream counts a stream for key until release is called, or refuses
// it when key already holds maxStreams.
func (l *principals) openStream(key string) (release func(), err error) {
	if l.maxStreams == 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams[key] >= l.maxStreams {
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
