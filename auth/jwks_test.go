package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// slowJWKS is a JWKS endpoint on a real socket that answers after a
// latency, serves whichever keys the test has published, and can hold
// its answers until the test lets them go.
type slowJWKS struct {
	t       *testing.T
	latency time.Duration
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	status  int           // 0: 200
	gate    chan struct{} // nil: answer after latency; else also wait for it
	served  atomic.Int32  // answers written
	body    string        // when set, sent instead of the keys
}

func newSlowJWKS(t *testing.T, latency time.Duration) (*slowJWKS, *httptest.Server) {
	j := &slowJWKS{t: t, latency: latency, keys: map[string]*ecdsa.PrivateKey{}}
	srv := httptest.NewServer(j)
	t.Cleanup(srv.Close)
	return j, srv
}

// jwksWithKey starts a slowJWKS publishing one ES256 key as k1, and returns
// it with that key and an auth config that trusts only it.
func jwksWithKey(t *testing.T, latency time.Duration) (*slowJWKS, *ecdsa.PrivateKey, config.Auth) {
	jw, srv := newSlowJWKS(t, latency)
	k1 := ecKey(t)
	jw.publish("k1", k1)
	a := authCfg()
	a.HMACSecret = ""
	a.JWKSURL = srv.URL
	a.Algorithms = []string{"ES256"}
	return jw, k1, a
}

func (j *slowJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	time.Sleep(j.latency)
	j.mu.Lock()
	gate := j.gate
	j.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	defer j.served.Add(1)
	if j.status != 0 {
		w.WriteHeader(j.status)
		return
	}
	if j.body != "" {
		w.Write([]byte(j.body))
		return
	}
	set := jwkset.NewMemoryStorage()
	for kid, k := range j.keys {
		jwk, err := jwkset.NewJWKFromKey(&k.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: jwkset.AlgES256}})
		if err != nil {
			j.t.Error(err)
			return
		}
		set.KeyWrite(r.Context(), jwk)
	}
	raw, err := set.JSONPublic(r.Context())
	if err != nil {
		j.t.Error(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}

func (j *slowJWKS) publish(kid string, k *ecdsa.PrivateKey) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.keys[kid] = k
}

func (j *slowJWKS) withdraw(kid string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.keys, kid)
}

func (j *slowJWKS) set(f func(j *slowJWKS)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(j)
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// refreshes counts the verifier's JWKS fetches by outcome, and lets a
// test wait for the next one.
type refreshes struct {
	mu   sync.Mutex
	ok   int
	bad  int
	keys int
	next chan struct{}
}

func (r *refreshes) record(ok bool, keys int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.ok++
	} else {
		r.bad++
	}
	r.keys = keys
	if r.next != nil {
		close(r.next)
		r.next = nil
	}
}

// await returns a channel closed by the next fetch after this call.
func (r *refreshes) await() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next == nil {
		r.next = make(chan struct{})
	}
	return r.next
}

func (r *refreshes) counts() (ok, bad, keys int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.bad, r.keys
}

func waitFor(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestJWKSRotationOverSlowNetwork is the regression test for refreshes that
// ran under a request's 1 ms rate-limit wait: against an endpoint with
// 60 ms of latency they always failed, so a rotated key was refused and a
// withdrawn one kept verifying new tokens.
func TestJWKSRotationOverSlowNetwork(t *testing.T) {
	jw, k1, a := jwksWithKey(t, 60*time.Millisecond)
	k2 := ecKey(t)
	clk := testenv.NewClock(now)
	var rs refreshes
	first := rs.await()
	v, err := New(t.Context(), a, Deps{
		Now:                 clk.Now,
		OnJWKSRefresh:       rs.record,
		JWKSRefreshInterval: time.Hour, // rotations here come only from what the test asks
		JWKSUnknownKIDEvery: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := func(kid string, k *ecdsa.PrivateKey, sub string) string {
		return sign(t, jwt.SigningMethodES256, k, claims(func(c jwt.MapClaims) { c["sub"] = sub }), map[string]any{"kid": kid})
	}
	if v.Ready() {
		t.Fatal("ready before the JWKS answered")
	}
	waitFor(t, "the first fetch", first)
	if !v.Ready() {
		t.Fatal("not ready after the first fetch")
	}
	if _, err := v.Verify(t.Context(), tok("k1", k1, "u1")); err != nil {
		t.Fatalf("k1: %v", err)
	}

	// Rotation: k2 is published. Its first token finds the kid unknown and
	// asks for a refresh; it does not wait for the 60 ms fetch, which the
	// gate holds until the token has been refused.
	jw.publish("k2", k2)
	gate := make(chan struct{})
	jw.set(func(j *slowJWKS) { j.gate = gate })
	next := rs.await()
	servedBefore := jw.served.Load()
	if _, err := v.Verify(t.Context(), tok("k2", k2, "u2")); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("k2 before its refresh: got %v, want ErrUnknownKey", err)
	}
	if jw.served.Load() != servedBefore {
		t.Fatal("the request waited for the JWKS to answer")
	}
	// More unknown kids in the same window ask for nothing more.
	for range 5 {
		v.Verify(t.Context(), tok("k9", ecKey(t), "u9"))
	}
	jw.set(func(j *slowJWKS) { j.gate = nil })
	close(gate)
	waitFor(t, "the refresh asked for by k2", next)
	if _, err := v.Verify(t.Context(), tok("k2", k2, "u2")); err != nil {
		t.Fatalf("k2 after its refresh: %v", err)
	}
	if got := jw.served.Load() - servedBefore; got != 1 {
		t.Errorf("unknown kids in one window caused %d fetches, want 1", got)
	}

	// Withdrawal: k1 leaves the JWKS. A token verified with it before is
	// cached; after the next refresh neither it nor a new one verifies.
	cached := tok("k1", k1, "u3")
	if _, err := v.Verify(t.Context(), cached); err != nil {
		t.Fatalf("k1 before withdrawal: %v", err)
	}
	jw.withdraw("k1")
	clk.Add(11 * time.Second) // the next unknown-kid window
	next = rs.await()
	v.Verify(t.Context(), tok("k8", ecKey(t), "u8")) // asks for a refresh
	waitFor(t, "the refresh after withdrawal", next)
	for name, token := range map[string]string{"new": tok("k1", k1, "u4"), "cached": cached} {
		if _, err := v.Verify(t.Context(), token); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("%s k1 token after withdrawal: got %v, want ErrUnknownKey", name, err)
		}
	}
	if ok, _, keys := rs.counts(); ok < 3 || keys != 1 {
		t.Errorf("refreshes ok=%d keys=%d, want >= 3 and 1", ok, keys)
	}
}

// TestJWKSBackgroundRefreshDropsWithdrawnKey: with no unknown kid to ask
// for it, the background refresh alone retires a withdrawn key.
func TestJWKSBackgroundRefreshDropsWithdrawnKey(t *testing.T) {
	jw, k1, a := jwksWithKey(t, 50*time.Millisecond)
	var rs refreshes
	first := rs.await()
	v, err := New(t.Context(), a, Deps{Now: func() time.Time { return now }, OnJWKSRefresh: rs.record, JWKSRefreshInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first fetch", first)
	token := sign(t, jwt.SigningMethodES256, k1, claims(nil), map[string]any{"kid": "k1"})
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatal(err)
	}
	jw.withdraw("k1")
	// The refresh under way when k1 was withdrawn may still carry it; the
	// one after certainly does not.
	waitFor(t, "a refresh", rs.await())
	waitFor(t, "the refresh after", rs.await())
	if _, err := v.Verify(t.Context(), token); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("withdrawn key after a background refresh: got %v", err)
	}
}

// TestJWKSDownAtStart: tokens are refused (never a panic), the verifier is
// not ready, and it becomes ready on its own once the JWKS answers.
func TestJWKSDownAtStart(t *testing.T) {
	jw, k1, a := jwksWithKey(t, 50*time.Millisecond)
	jw.set(func(j *slowJWKS) { j.status = http.StatusServiceUnavailable })
	var rs refreshes
	failed := rs.await()
	v, err := New(t.Context(), a, Deps{Now: func() time.Time { return now }, OnJWKSRefresh: rs.record})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed first fetch", failed)
	token := sign(t, jwt.SigningMethodES256, k1, claims(nil), map[string]any{"kid": "k1"})
	if _, err := v.Verify(t.Context(), token); !errors.Is(err, ErrInvalid) {
		t.Fatalf("JWKS down: got %v, want a refusal", err)
	}
	if v.Ready() {
		t.Fatal("ready with the JWKS down")
	}
	jw.set(func(j *slowJWKS) { j.status = 0 })
	for !v.Ready() { // the retry comes after 1 s of backoff
		waitFor(t, "a retry", rs.await())
	}
	if _, err := v.Verify(t.Context(), token); err != nil {
		t.Fatalf("JWKS back: %v", err)
	}
	if _, bad, _ := rs.counts(); bad == 0 {
		t.Error("the failed fetch was not reported")
	}
}

// TestJWKSBadDocuments: a document that is not a JWKS, or is too large,
// is a failed refresh that keeps the keys already held.
func TestJWKSBadDocuments(t *testing.T) {
	for name, body := range map[string]string{
		"not json": "<html>",
		"no keys":  `{"issuer": "x"}`,
		"too big":  `{"keys": [` + strings.Repeat(`{"kty":"EC"},`, maxJWKSBytes/12) + `{}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			jw, k1, a := jwksWithKey(t, 0)
			var rs refreshes
			first := rs.await()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			v, err := New(ctx, a, Deps{Now: func() time.Time { return now }, OnJWKSRefresh: rs.record, JWKSRefreshInterval: 50 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the first fetch", first)
			jw.set(func(j *slowJWKS) { j.body = body })
			waitFor(t, "a refresh", rs.await())
			waitFor(t, "a bad refresh", rs.await())
			token := sign(t, jwt.SigningMethodES256, k1, claims(nil), map[string]any{"kid": "k1"})
			if _, err := v.Verify(t.Context(), token); err != nil {
				t.Fatalf("key lost to a bad document: %v", err)
			}
			if _, bad, keys := rs.counts(); bad == 0 || keys != 1 {
				t.Errorf("bad=%d keys=%d, want a failed refresh and 1 key held", bad, keys)
			}
		})
	}
}
