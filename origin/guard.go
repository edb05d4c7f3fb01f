package origin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/internal/accesslog"
)

// ErrSaturated: s3.max_in_flight origin requests are already running; the
// Guard refuses at once rather than queue (503).
var ErrSaturated = errors.New("origin busy")

// Slots bound the origin requests in flight (s3.max_in_flight). One Slots
// serves every configuration a process runs in turn, so that a reload
// changes the bound but never forgets what is held: requests of the old
// configuration still in flight count against the new one.
type Slots struct {
	used  atomic.Int64
	limit atomic.Int64
}

// NewSlots is a bound of n requests in flight (at least 1).
func NewSlots(n int) *Slots {
	s := &Slots{}
	s.SetLimit(n)
	return s
}

// SetLimit changes the bound; slots already held stay held.
func (s *Slots) SetLimit(n int) { s.limit.Store(int64(max(n, 1))) }

// InUse is the number of slots held.
func (s *Slots) InUse() int { return int(s.used.Load()) }

// tryAcquire takes a slot if one is free.
func (s *Slots) tryAcquire() bool {
	for {
		u := s.used.Load()
		if u >= s.limit.Load() {
			return false
		}
		if s.used.CompareAndSwap(u, u+1) {
			return true
		}
	}
}

func (s *Slots) release() { s.used.Add(-1) }

// Observer is told of every origin request (metrics). Its methods must be
// safe for concurrent use.
type Observer interface {
	// Origin records one request's result label (Result) and duration.
	Origin(tileset, result string, d time.Duration)
	// OriginInFlight moves the count of slots held by delta.
	OriginInFlight(delta int)
}

// GuardDeps are a Guard's collaborators.
type GuardDeps struct {
	// Slots bound the requests in flight; required.
	Slots *Slots
	// Observer records each request; nil records nothing.
	Observer Observer
	// Logger receives origin failures; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the clock for durations; time.Now when nil.
	Now func() time.Time
}

// Guard is a Fetcher over another that owns what every origin request
// shares, so that whoever fetches through it need not: a slot of
// s3.max_in_flight for the request's time at S3, the origin metrics, and
// one log line for each failure that is the origin's (with its AWS code
// and request ID, never credentials).
//
// A slot is held until the response headers for a Request with Stream
// set (its body goes out at a client's pace: slow readers are bounded per
// principal, not by slots everyone shares), and otherwise until the body
// is closed (a cache load reads it at the origin's pace).
type Guard struct {
	next Fetcher
	deps GuardDeps
}

var _ Fetcher = (*Guard)(nil)

// NewGuard guards next.
func NewGuard(next Fetcher, deps GuardDeps) *Guard {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Observer == nil {
		deps.Observer = noObserver{}
	}
	return &Guard{next: next, deps: deps}
}

// Get takes a slot, or answers ErrSaturated at once, and fetches req.
func (g *Guard) Get(ctx context.Context, req Request) (*Object, error) {
	if !g.deps.Slots.tryAcquire() {
		g.deps.Observer.Origin(req.Tileset, Result(ErrSaturated), 0)
		return nil, ErrSaturated
	}
	g.deps.Observer.OriginInFlight(1)
	start := g.deps.Now()
	obj, err := g.next.Get(ctx, req)
	g.deps.Observer.Origin(req.Tileset, Result(err), g.deps.Now().Sub(start))
	if err != nil || obj.Body == nil || req.Stream {
		g.free()
		if err != nil && originsFault(err) {
			g.logFailure(ctx, "origin request failed", req.Tileset, err)
		}
		return obj, err
	}
	obj.Body = &guardedBody{ReadCloser: obj.Body, g: g, ctx: ctx, tileset: req.Tileset}
	return obj, nil
}

func (g *Guard) free() {
	g.deps.Slots.release()
	g.deps.Observer.OriginInFlight(-1)
}

// logFailure logs an origin failure with what an operator needs to chase
// it: the AWS error code and request ID, never credentials.
func (g *Guard) logFailure(ctx context.Context, msg, tileset string, err error) {
	attrs := []any{"tileset", tileset, "err", accesslog.RedactTokens(err.Error())}
	var oe *Error
	if errors.As(err, &oe) {
		attrs = append(attrs, "op", oe.Op, "code", oe.Code, "request_id", oe.RequestID)
	}
	g.deps.Logger.WarnContext(ctx, msg, attrs...)
}

// guardedBody frees its slot once, when closed, and logs a body that
// broke off.
type guardedBody struct {
	io.ReadCloser
	g       *Guard
	ctx     context.Context
	tileset string
	once    sync.Once
}

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && originsFault(err) {
		b.g.logFailure(b.ctx, "origin body read failed", b.tileset, err)
	}
	return n, err
}

func (b *guardedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.g.free)
	return err
}

// originsFault reports a failure worth a log line: the origin's, not an
// answer (missing, not modified, replaced, a range outside the object),
// not the caller going away, not our own bound.
func originsFault(err error) bool {
	for _, e := range []error{context.Canceled, ErrNotFound, ErrNotModified, ErrChanged, ErrRangeNotSatisfiable, ErrSaturated} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

// Result is the origin_requests_total result label of a Get's error.
func Result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrSaturated):
		return "saturated"
	case errors.Is(err, ErrNotModified):
		return "not_modified"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrRangeNotSatisfiable):
		return "range"
	case errors.Is(err, ErrChanged):
		return "changed"
	case errors.Is(err, ErrDenied):
		return "denied"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "canceled"
}

type noObserver struct{}

func (noObserver) Origin(string, string, time.Duration) {}
func (noObserver) OriginInFlight(int)                   {}
