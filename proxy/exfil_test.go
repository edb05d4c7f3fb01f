package proxy

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/internal/store"
)

// TestQuotaAnswers: beyond the quota, 429 with Retry-After and the
// RateLimit fields; a 304 and a 404 do not count; the access line and
// limited_total name the reason.
func TestQuotaAnswers(t *testing.T) {
	now := time.Date(2026, 12, 4, 23, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l := exfil.New(exfil.Config{Quotas: map[string]config.Quota{"a": {Tiles: 3, Per: config.Duration(24 * time.Hour)}}},
		exfil.Deps{Store: store.NewMemory(clock), Now: clock, Metrics: nopExfilMetrics{}, Log: discardLogger()})
	go l.Run(t.Context())
	defer l.Close()
	fixtureExfil = l
	defer func() { fixtureExfil = nil }()
	f := newFixture(t, nil)
	f.setClock(clock)
	tok := token(t, time.Hour, "a")
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	first := f.do("GET", "/tiles/a/0/0/0.png", bearer)
	if first.Code != 200 {
		t.Fatalf("first: %d", first.Code)
	}
	etag := first.Header().Get("Etag")
	for range 5 { // 304s are free
		if rec := f.do("GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + tok, "If-None-Match": etag}); rec.Code != 304 {
			t.Fatalf("conditional: %d", rec.Code)
		}
	}
	for range 5 { // so are 404s
		if rec := f.do("GET", "/tiles/a/9/9/9.png", bearer); rec.Code != 404 {
			t.Fatalf("missing: %d", rec.Code)
		}
	}
	for i := range 2 {
		if rec := f.do("GET", "/tiles/a/0/0/0.png", bearer); rec.Code != 200 {
			t.Fatalf("tile %d: %d", i+2, rec.Code)
		}
	}
	rec := f.do("GET", "/tiles/a/0/0/0.png", bearer)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("tile 4: %d, want 429", rec.Code)
	}
	h := rec.Header()
	if h.Get("Retry-After") != "3600" || h.Get("RateLimit-Policy") != `"quota";q=3;w=86400` || h.Get("RateLimit") != `"quota";r=0;t=3600` {
		t.Errorf("429 headers: Retry-After %q, RateLimit-Policy %q, RateLimit %q", h.Get("Retry-After"), h.Get("RateLimit-Policy"), h.Get("RateLimit"))
	}
	if !strings.Contains(f.log.String(), "reason=quota") {
		t.Errorf("the access line does not say reason=quota:\n%s", f.log.String())
	}
	if rec := f.do("GET", "/tiles/b/0/0/0.png", map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "b")}); rec.Code != 200 {
		t.Errorf("a tileset without a quota: %d", rec.Code)
	}
}

// TestRevokedCachedToken: a revocation reaches tokens already in the
// verified-token cache, in a header or a session cookie: 401
// invalid_token, reason revoked.
func TestRevokedCachedToken(t *testing.T) {
	var revoked atomic.Bool
	fixtureRevoked = func(iss, sub, jti string) bool { return revoked.Load() && iss == "" && sub == "alice" }
	defer func() { fixtureRevoked = nil }()
	f := newFixture(t, nil)
	tok := token(t, time.Hour, "a")
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	cookie := map[string]string{"Cookie": "__Host-tileproxy_token=" + tok}
	for _, h := range []map[string]string{bearer, cookie} {
		if rec := f.do("GET", "/tiles/a/0/0/0.png", h); rec.Code != 200 {
			t.Fatalf("before: %d", rec.Code)
		}
	}
	revoked.Store(true)
	for i, h := range []map[string]string{bearer, cookie} {
		rec := f.do("GET", "/tiles/a/0/0/0.png", h)
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Fatalf("after (%s): %d %q", []string{"header", "cookie"}[i], rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	}
	if !strings.Contains(f.log.String(), "reason=revoked") {
		t.Errorf("the access line does not say reason=revoked")
	}
}

type nopExfilMetrics struct{}

func (nopExfilMetrics) Limited(string) {}
func (nopExfilMetrics) Sweep(string)   {}
func (nopExfilMetrics) StoreUp(bool)   {}
