package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// maxJWKSBytes bounds a JWKS document: real ones hold a handful of keys in
// a few KiB, and an endpoint that answers with gigabytes must not cost
// that much memory.
const maxJWKSBytes = 1 << 20

// jwksKeys keeps the keys of one JWKS URL, refreshed by a goroutine of its
// own. No fetch ever runs under a request's context: a request that meets
// an unknown kid may ask for a refresh and wait a few milliseconds for it,
// but the fetch goes on (with its own timeout) whether or not the request
// is still there, and the keys it brings serve the requests after.
//
// keyfunc reads the keys from a jwkset memory store; this type only
// decides when that store is refilled. (keyfunc's own HTTP storage runs
// an unknown kid's refresh under the request's context, cut off by its
// rate-limit wait: against a JWKS that takes more than that wait to
// answer, a rotated key was never fetched.)
type jwksKeys struct {
	// url is the JWKS's; with issuer set it starts empty and is found
	// by OpenID discovery (only the run goroutine touches it then).
	url      string
	issuer   string   // discover the URL from this issuer, when url is ""
	hosts    []string // hosts besides the issuer's a discovered URL may name
	client   *http.Client
	timeout  time.Duration // per fetch
	interval time.Duration // between background refreshes
	wait     time.Duration // the longest a request waits for a refresh
	limiter  *rate.Limiter // refreshes asked for by unknown kids
	now      func() time.Time
	log      *slog.Logger
	// onRefresh reports each fetch's outcome and the keys then held.
	onRefresh func(ok bool, keys int)
	// onRemoved is called when a refresh drops a key that was held.
	onRemoved func()

	store *jwkset.MemoryJWKSet
	kf    keyfunc.Keyfunc
	ready atomic.Bool // a fetch has succeeded

	mu      sync.Mutex
	pending chan struct{} // closed when the refresh asked for is done; nil when none is asked for
	kick    chan struct{} // wakes the loop for an asked-for refresh
}

func newJWKSKeys(ctx context.Context, j *jwksKeys) (*jwksKeys, error) {
	j.store = jwkset.NewMemoryStorage()
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: j.store})
	if err != nil {
		return nil, err
	}
	j.kf = kf
	j.kick = make(chan struct{}, 1)
	go j.run(ctx)
	return j, nil
}

// run fetches at once, then every interval; after a failure it retries
// sooner (1 s, doubling up to the interval), so a JWKS that was down at
// start is picked up as soon as it answers.
func (j *jwksKeys) run(ctx context.Context) {
	retry := time.Second
	for {
		j.mu.Lock()
		asked := j.pending
		j.pending = nil
		j.mu.Unlock()

		err := j.refresh(ctx)
		if asked != nil {
			close(asked)
		}
		next := j.interval
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			j.log.Warn("JWKS refresh failed; keeping the keys already known", "url", j.url, "issuer", j.issuer, "err", err)
			next = min(retry, j.interval)
			retry = min(2*retry, j.interval)
		} else {
			retry = time.Second
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-j.kick:
			t.Stop()
		}
	}
}

// refresh fetches the JWKS and replaces the keys held. A document that
// cannot be read leaves the keys as they were.
func (j *jwksKeys) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, j.timeout)
	defer cancel()
	keys, err := j.fetch(ctx)
	if err != nil {
		j.onRefresh(false, j.count())
		return err
	}
	old, _ := j.store.KeyReadAll(ctx)
	if err := j.store.KeyReplaceAll(ctx, keys); err != nil {
		j.onRefresh(false, j.count())
		return err
	}
	j.ready.Store(true)
	j.onRefresh(true, len(keys))
	for _, o := range old {
		if !slices.ContainsFunc(keys, func(k jwkset.JWK) bool { return sameKey(k, o) }) {
			j.onRemoved()
			break
		}
	}
	return nil
}

// sameKey reports whether a and b are the same key under the same kid.
func sameKey(a, b jwkset.JWK) bool {
	am, bm := a.Marshal(), b.Marshal()
	ak, ok := a.Key().(interface{ Equal(crypto.PublicKey) bool })
	return ok && am.KID == bm.KID && am.ALG == bm.ALG && ak.Equal(b.Key())
}

func (j *jwksKeys) fetch(ctx context.Context) ([]jwkset.JWK, error) {
	if j.url == "" {
		u, err := j.discover(ctx)
		if err != nil {
			return nil, err
		}
		j.url = u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := redirected(resp); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("document larger than %d bytes", maxJWKSBytes)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	rawKeys, ok := doc["keys"]
	if !ok {
		return nil, errors.New(`not a JWKS document: no "keys"`)
	}
	// "keys": null is read as no keys: a provider that has withdrawn
	// every key must not leave the old ones verifying.
	var list []json.RawMessage
	if err := json.Unmarshal(rawKeys, &list); err != nil {
		return nil, fmt.Errorf(`not a JWKS document: "keys": %w`, err)
	}
	keys := make([]jwkset.JWK, 0, len(list))
	skipped := 0
	for _, raw := range list {
		// Public material only: a symmetric or private key published in a
		// JWKS is a provider's mistake, not something to verify with.
		k, err := jwkset.NewJWKFromRawJSON(raw, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			skipped++
			continue
		}
		keys = append(keys, k)
	}
	if skipped > 0 {
		j.log.Warn("JWKS keys skipped: unsupported or invalid", "url", j.url, "skipped", skipped, "kept", len(keys))
	}
	return keys, nil
}

// noRedirects is c (a client of its own when nil) made to stop at a
// redirect. Discovery and JWKS fetches decide whose keys verify tokens:
// a redirect from an allowed URL to another host, or from https to http,
// would get round the jwks_hosts and scheme checks, so none is followed.
// The copy leaves the caller's client as it was.
func noRedirects(c *http.Client) *http.Client {
	out := &http.Client{}
	if c != nil {
		*out = *c
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return out
}

// redirected is the error for a redirect answered to a discovery or
// JWKS fetch (noRedirects hands it back unfollowed).
func redirected(resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	to := resp.Header.Get("Location")
	if u, err := url.Parse(to); err == nil {
		to = u.Redacted()
	}
	return fmt.Errorf("status %d redirects to %q: redirects are not followed (configure the final URL)", resp.StatusCode, to)
}

func (j *jwksKeys) count() int {
	all, _ := j.store.KeyReadAll(context.Background())
	return len(all)
}

// awaitRefresh asks for a refresh because a token named a kid not held,
// at most once per rate-limit window, and waits for it at most j.wait.
// It reports whether a refresh finished while it waited.
func (j *jwksKeys) awaitRefresh(ctx context.Context) bool {
	j.mu.Lock()
	if j.pending == nil {
		if !j.limiter.AllowN(j.now(), 1) {
			j.mu.Unlock()
			return false
		}
		j.pending = make(chan struct{})
		select {
		case j.kick <- struct{}{}:
		default:
		}
	}
	done := j.pending
	j.mu.Unlock()
	t := time.NewTimer(j.wait)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// key returns the key for t's kid, asking for a refresh when the kid is
// unknown, and every key held for a token without a kid.
func (j *jwksKeys) key(ctx context.Context, t *jwt.Token) (any, error) {
	k, err := j.kf.KeyfuncCtx(ctx)(t)
	if errors.Is(err, jwkset.ErrKeyNotFound) && j.awaitRefresh(ctx) {
		k, err = j.kf.KeyfuncCtx(ctx)(t)
	}
	return k, err
}
