package origin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// fakeAssume stands in for STS AssumeRole: credentials that live ttl from
// the fake clock's now, or an error while down. calls counts every call;
// gate, when set, holds each call until it is closed.
type fakeAssume struct {
	clock *testenv.Clock
	ttl   time.Duration
	down  atomic.Bool
	calls atomic.Int64
	gate  chan struct{}
}

func (f *fakeAssume) Retrieve(ctx context.Context) (aws.Credentials, error) {
	n := f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.down.Load() {
		return aws.Credentials{}, errors.New("sts unreachable")
	}
	return aws.Credentials{AccessKeyID: "AK" + string(rune('0'+n%10)), SecretAccessKey: "s", SessionToken: "t",
		CanExpire: true, Expires: f.clock.Now().Add(f.ttl)}, nil
}

func newTestRole(ttl time.Duration) (*roleCredentials, *fakeAssume, *testenv.Clock) {
	clk := testenv.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	fa := &fakeAssume{clock: clk, ttl: ttl}
	r := newRoleCredentials("city", fa, Deps{Now: clk.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return r, fa, clk
}

// TestRoleCredentialsRefreshAhead: one call for a crowd of cold requests,
// the same credentials until a fifth of the lifetime before expiry, then
// exactly one refresh per lifetime however many requests ask, and never
// credentials past their expiry. Time is the fake clock's only.
func TestRoleCredentialsRefreshAhead(t *testing.T) {
	const ttl = time.Hour
	r, fa, clk := newTestRole(ttl)
	fa.gate = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for range 100 {
		wg.Go(func() {
			if _, err := r.Retrieve(context.Background()); err != nil {
				errs <- err
			}
		})
	}
	for fa.calls.Load() == 0 { // the first caller is inside STS; let the others pile up
		time.Sleep(time.Millisecond)
	}
	close(fa.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("cold request: %v", err)
	}
	if n := fa.calls.Load(); n != 1 {
		t.Fatalf("100 concurrent cold requests made %d AssumeRole calls, want 1", n)
	}
	fa.gate = nil

	// Step through three lifetimes a minute at a time, asking ten times
	// a step; count calls and check every answer is unexpired.
	for step := 0; step < 3*60; step++ {
		for range 10 {
			c, err := r.Retrieve(context.Background())
			if err != nil {
				t.Fatalf("at +%d min: %v", step, err)
			}
			if !clk.Now().Before(c.Expires) {
				t.Fatalf("at +%d min: credentials expiring %v handed out", step, c.Expires)
			}
		}
		clk.Add(time.Minute)
	}
	// Refresh at max(55 min) = expiry - min(5 min, ttl/5): calls at 0,
	// 55, 110, 165 minutes.
	if n := fa.calls.Load(); n != 4 {
		t.Errorf("AssumeRole calls over three hours: %d, want 4 (one per refresh)", n)
	}
}

// TestRoleCredentialsSTSDown: with STS down, requests keep the current
// credentials past the refresh point while they are valid, retries back
// off instead of one call per request, requests fail once the credentials
// are about to expire, and recover when STS is back.
func TestRoleCredentialsSTSDown(t *testing.T) {
	const ttl = 10 * time.Minute // refresh from 8 min, never used after 9.5 min
	r, fa, clk := newTestRole(ttl)
	first, err := r.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fa.down.Store(true)
	clk.Add(8*time.Minute + time.Second) // past the refresh point
	before := fa.calls.Load()
	for range 20 {
		c, err := r.Retrieve(context.Background())
		if err != nil || c.AccessKeyID != first.AccessKeyID {
			t.Fatalf("STS down, current credentials still valid: %v %q", err, c.AccessKeyID)
		}
	}
	if n := fa.calls.Load() - before; n != 1 {
		t.Errorf("20 requests while backing off made %d STS calls, want 1", n)
	}
	// After the backoff, one more attempt; still the old credentials.
	clk.Add(minBackoff)
	if _, err := r.Retrieve(context.Background()); err != nil {
		t.Fatalf("second attempt, credentials still valid: %v", err)
	}
	// Past expiry less the safety margin: no credentials at all.
	clk.Add(ttl - 8*time.Minute - time.Second - minBackoff - expirySafety + time.Second)
	var oe *Error
	if _, err := r.Retrieve(context.Background()); !errors.As(err, &oe) || oe.Op != "AssumeRole" || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("credentials about to expire, STS down: got %v, want ErrUnavailable from AssumeRole", err)
	}
	fa.down.Store(false)
	clk.Add(maxBackoff) // past any backoff
	c, err := r.Retrieve(context.Background())
	if err != nil || c.AccessKeyID == first.AccessKeyID {
		t.Fatalf("STS back: %v %q", err, c.AccessKeyID)
	}
}
