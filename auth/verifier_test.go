package auth

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/scope"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	now    = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
)

type keys struct {
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	ed   ed25519.PrivateKey
	pems []string // public key files
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	k := &keys{}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, pub := range map[string]crypto.PublicKey{"rsa": &k.rsa.PublicKey, "ec": &k.ec.PublicKey, "ed": k.ed.Public()} {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		k.pems = append(k.pems, p)
	}
	return k
}

func authCfg() config.Auth {
	a := config.Default().Auth
	a.HMACSecret = string(secret)
	return a
}

func newVerifier(t *testing.T, a config.Auth) *Verifier {
	t.Helper()
	v, err := New(t.Context(), a, Deps{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "tilesets": []string{"a"}}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned builds a token by hand, for headers the library refuses to sign.
func unsigned(hdr, body string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(hdr)) + "." + enc([]byte(body)) + "."
}

func TestVerifyHMAC(t *testing.T) {
	k := newKeys(t)
	pubPEM, _ := os.ReadFile(k.pems[0])
	v := newVerifier(t, authCfg())
	withIssAud := authCfg()
	withIssAud.Issuer, withIssAud.Audience = "https://idp.example.com", "tileproxy"
	vIA := newVerifier(t, withIssAud)

	for _, tc := range []struct {
		name  string
		v     *Verifier
		token string
		want  error
	}{
		{"valid", v, sign(t, jwt.SigningMethodHS256, secret, claims(nil), nil), nil},
		{"valid HS512 not allowed", v, sign(t, jwt.SigningMethodHS512, secret, claims(nil), nil), ErrBadAlgorithm},
		{"wrong secret", v, sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil), nil), ErrBadSignature},
		{"expired", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }), nil), ErrExpired},
		{"expired within leeway", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-10 * time.Second).Unix() }), nil), nil},
		{"nbf future", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() }), nil), ErrNotYetValid},
		{"iat future", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["iat"] = now.Add(time.Minute).Unix() }), nil), ErrNotYetValid},
		{"no exp", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { delete(c, "exp") }), nil), ErrMalformed},
		{"exp as string", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = "tomorrow" }), nil), ErrMalformed},
		{"garbage", v, "not.a.jwt", ErrMalformed},
		{"two parts", v, "abc.def", ErrMalformed},
		{"huge", v, strings.Repeat("a", MaxTokenBytes+1), ErrMalformed},
		{"alg none", v, unsigned(`{"alg":"none","typ":"JWT"}`, `{"exp":9999999999,"tilesets":"*"}`), ErrBadAlgorithm},
		{"alg None", v, unsigned(`{"alg":"None","typ":"JWT"}`, `{"exp":9999999999,"tilesets":"*"}`), ErrBadAlgorithm},
		{"HS256 signed with the RSA public key", v, sign(t, jwt.SigningMethodHS256, pubPEM, claims(nil), nil), ErrBadSignature},
		{"RS256 when only HS256 allowed", v, sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil), nil), ErrBadAlgorithm},
		{"grants not a list of strings", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["tilesets"] = []any{1, 2} }), nil), ErrBadGrants},
		{"grants an object", v, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["tilesets"] = map[string]any{"a": true} }), nil), ErrBadGrants},
		{"iss+aud ok", vIA, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["iss"] = "https://idp.example.com"; c["aud"] = []string{"x", "tileproxy"} }), nil), nil},
		{"wrong iss", vIA, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com"; c["aud"] = "tileproxy" }), nil), ErrBadIssuer},
		{"missing aud", vIA, sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["iss"] = "https://idp.example.com" }), nil), ErrBadAudience},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.v.Verify(t.Context(), tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if p.Subject != "alice" || !p.Expires.After(now.Add(-time.Minute)) {
					t.Errorf("principal: %+v", p)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want %v (and ErrInvalid)", err, tc.want)
			}
		})
	}
}

func TestHMACNeverCheckedAgainstPublicKeys(t *testing.T) {
	// Only public keys configured, HS256 allowed by mistake: the public
	// key bytes must not become an HMAC secret.
	k := newKeys(t)
	a := authCfg()
	a.HMACSecret = ""
	a.PublicKeys = k.pems
	a.Algorithms = []string{"HS256", "RS256"}
	v := newVerifier(t, a)
	for _, p := range k.pems {
		pub, _ := os.ReadFile(p)
		_, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, pub, claims(nil), nil))
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: got %v, want refusal", p, err)
		}
	}
}

func TestVerifyPublicKeysPEM(t *testing.T) {
	k := newKeys(t)
	a := authCfg()
	a.HMACSecret = ""
	a.PublicKeys = k.pems
	a.Algorithms = []string{"RS256", "PS256", "ES256", "EdDSA"}
	v := newVerifier(t, a)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name  string
		m     jwt.SigningMethod
		key   any
		valid bool
	}{
		{"RS256", jwt.SigningMethodRS256, k.rsa, true},
		{"PS256", jwt.SigningMethodPS256, k.rsa, true},
		{"ES256", jwt.SigningMethodES256, k.ec, true},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, true},
		{"RS256 unknown key", jwt.SigningMethodRS256, other, false},
		{"RS384 not allowed", jwt.SigningMethodRS384, k.rsa, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(t.Context(), sign(t, tc.m, tc.key, claims(nil), nil))
			if tc.valid != (err == nil) {
				t.Fatalf("got %v, want valid=%v", err, tc.valid)
			}
		})
	}
}

func TestVerifyJWKS(t *testing.T) {
	k := newKeys(t)
	var fetches atomic.Int32
	var down atomic.Bool
	set := jwkset.NewMemoryStorage()
	for kid, key := range map[string]any{"r1": k.rsa, "e1": k.ec, "d1": k.ed} {
		jwk, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
		if err != nil {
			t.Fatal(err)
		}
		if err := set.KeyWrite(t.Context(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		raw, err := set.JSONPublic(r.Context())
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(raw)
	}))
	defer srv.Close()

	a := authCfg()
	a.HMACSecret = ""
	a.JWKSURL = srv.URL
	a.Algorithms = []string{"RS256", "ES256", "EdDSA"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	v, err := New(ctx, a, Deps{Now: func() time.Time { return now }, JWKSUnknownKIDEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, v)
	for _, tc := range []struct {
		kid string
		m   jwt.SigningMethod
		key any
	}{{"r1", jwt.SigningMethodRS256, k.rsa}, {"e1", jwt.SigningMethodES256, k.ec}, {"d1", jwt.SigningMethodEdDSA, k.ed}} {
		if _, err := v.Verify(t.Context(), sign(t, tc.m, tc.key, claims(nil), map[string]any{"kid": tc.kid})); err != nil {
			t.Errorf("%s via JWKS: %v", tc.m.Alg(), err)
		}
	}
	// A kid naming another key of the wrong type must not verify.
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil), map[string]any{"kid": "e1"})); !errors.Is(err, ErrInvalid) {
		t.Errorf("RS256 with EC kid: got %v, want refusal", err)
	}
	// Unknown kid: refused, and the refresh it triggers is rate limited.
	before := fetches.Load()
	for range 5 {
		_, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, claims(nil), map[string]any{"kid": "nope"}))
		if !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("unknown kid: got %v, want ErrUnknownKey", err)
		}
	}
	if n := fetches.Load() - before; n > 1 {
		t.Errorf("unknown kid caused %d JWKS fetches, want at most 1", n)
	}
	// The JWKS going down does not forget keys already fetched.
	down.Store(true)
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, k.ec, claims(nil), map[string]any{"kid": "e1"})); err != nil {
		t.Errorf("JWKS down, cached key: %v", err)
	}
}

func TestGrants(t *testing.T) {
	v := newVerifier(t, authCfg())
	for _, tc := range []struct {
		name   string
		grants any
		allow  []string
		deny   []string
	}{
		{"list", []string{"a", "b"}, []string{"a", "b"}, []string{"c", ""}},
		{"star", "*", []string{"a", "zzz"}, nil},
		{"star in list", []string{"x", "*"}, []string{"a"}, nil},
		{"single string", "a", []string{"a"}, []string{"b"}},
		{"missing", nil, nil, []string{"a"}},
		{"empty list", []string{}, nil, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := claims(func(c jwt.MapClaims) {
				if tc.grants == nil {
					delete(c, "tilesets")
				} else {
					c["tilesets"] = tc.grants
				}
			})
			p, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, secret, c, nil))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tc.allow {
				if !p.Allows(n) {
					t.Errorf("Allows(%q) = false", n)
				}
			}
			for _, n := range tc.deny {
				if p.Allows(n) {
					t.Errorf("Allows(%q) = true", n)
				}
			}
		})
	}
}

func TestTokenFromRequest(t *testing.T) {
	v := newVerifier(t, authCfg())
	noQuery := authCfg()
	noQuery.QueryParam = ""
	vNoQ := newVerifier(t, noQuery)
	plain := authCfg()
	plain.Cookie.Secure = false
	vPlain := newVerifier(t, plain)
	for _, tc := range []struct {
		name       string
		v          *Verifier
		header     string
		cookie     string
		query      string
		want       string
		wantErr    error
		cookieName string // "" = the verifier's own
	}{
		{"secure reads only __Host-", v, "", "C", "", "", ErrNoToken, CookieName},
		{"secure ignores a planted plain cookie", v, "", "C", "access_token=Q", "Q", nil, CookieName},
		{"secure cookie name", v, "", "C", "", "C", nil, "__Host-tileproxy_token"},
		{"plain cookie without secure", vPlain, "", "C", "", "C", nil, "tileproxy_token"},
		{"plain ignores __Host-", vPlain, "", "C", "", "", ErrNoToken, SecureCookieName},
		{"none", v, "", "", "", "", ErrNoToken, ""},
		{"header", v, "Bearer H", "C", "access_token=Q", "H", nil, ""},
		{"header scheme case", v, "bearer H", "", "", "H", nil, ""},
		{"cookie", v, "", "C", "access_token=Q", "C", nil, ""},
		{"query", v, "", "", "x=1&access_token=Q", "Q", nil, ""},
		{"query disabled", vNoQ, "", "", "access_token=Q", "", ErrNoToken, ""},
		{"basic header not rescued by cookie", v, "Basic dXNlcjpwdw==", "C", "", "", ErrMalformed, ""},
		{"empty bearer", v, "Bearer ", "C", "", "", ErrMalformed, ""},
		{"two query tokens", v, "", "", "access_token=a&access_token=b", "", ErrMalformed, ""},
		{"empty query token", v, "", "", "access_token=", "", ErrMalformed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/tiles/a/0/0/0.png?"+tc.query, nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if tc.cookie != "" {
				name := cmp.Or(tc.cookieName, tc.v.CookieName())
				r.AddCookie(&http.Cookie{Name: name, Value: tc.cookie})
			}
			// Each source carries its own value (H, C, Q), so the token
			// returned says which source was judged.
			tok, err := tc.v.TokenFromRequest(r)
			if !errors.Is(err, tc.wantErr) || tok != tc.want {
				t.Fatalf("got (%q, %v), want (%q, %v)", tok, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]string{ErrNoToken: "no_token", ErrNotGranted: "not_granted", ErrExpired: "expired", ErrBadAlgorithm: "bad_algorithm", errors.New("x"): "other"} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
	// Neither the token nor its claims appear in the error of a refusal,
	// since errors are logged.
	v := newVerifier(t, authCfg())
	for _, tok := range []string{
		sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), nil),
		sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil), nil),
		sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["tilesets"] = []any{"alice-grant", 1} }), nil),
	} {
		_, err := v.Verify(t.Context(), tok)
		if err == nil {
			t.Fatal("refusal expected")
		}
		if msg := err.Error(); strings.Contains(msg, "alice") || strings.Contains(msg, tok[:20]) {
			t.Errorf("error %q leaks the token or its claims", msg)
		}
	}
}

func TestMintHMAC(t *testing.T) {
	v := newVerifier(t, authCfg())
	tok, err := MintHMAC(MintOptions{Secret: secret, Tilesets: []string{"city"}, TTL: time.Hour, Subject: "alice", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(t.Context(), tok)
	if err != nil || !p.Allows("city") || p.Allows("other") || !p.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("got %+v, %v", p, err)
	}
	if _, err := MintHMAC(MintOptions{Secret: []byte("short"), TTL: time.Hour}); err == nil {
		t.Error("short secret accepted")
	}
}

func TestVerifiedCacheNeverExtendsValidity(t *testing.T) {
	clock := now
	v, err := New(t.Context(), authCfg(), Deps{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(time.Minute).Unix() }), nil)
	p1, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := v.Verify(t.Context(), tok)
	if err != nil || p2 != p1 {
		t.Fatalf("second verification did not come from the cache (%v)", err)
	}
	clock = now.Add(time.Minute + 29*time.Second) // inside exp + 30 s leeway
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	clock = now.Add(time.Minute + 31*time.Second) // past exp + leeway
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("past exp: got %v, want ErrExpired although the token was cached", err)
	}
}

func TestVerifiedCacheIsReverifiedAfterMaxAge(t *testing.T) {
	clock := now
	v, err := New(t.Context(), authCfg(), Deps{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(24 * time.Hour).Unix() }), nil)
	p1, _ := v.Verify(t.Context(), tok)
	clock = now.Add(verifiedMaxAge - time.Second)
	if p, _ := v.Verify(t.Context(), tok); p != p1 {
		t.Error("re-verified before verifiedMaxAge")
	}
	clock = now.Add(verifiedMaxAge + time.Second)
	if p, err := v.Verify(t.Context(), tok); err != nil || p == p1 {
		t.Errorf("not re-verified after verifiedMaxAge (%v)", err)
	}
	// Refusals are never cached: a bad token is judged every time.
	bad := tok[:len(tok)-2] + "xx"
	for range 2 {
		if _, err := v.Verify(t.Context(), bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("bad token: %v", err)
		}
	}
	if v.seen.Len() != 1 {
		t.Errorf("cache holds %d entries, want only the good token", v.seen.Len())
	}
}

func TestMaxTokenLifetime(t *testing.T) {
	capped := authCfg()
	capped.MaxTokenLifetime = config.Duration(24 * time.Hour)
	v := newVerifier(t, capped)
	vNoCap := newVerifier(t, authCfg())
	years := func(c jwt.MapClaims) { c["exp"] = now.Add(5 * 365 * 24 * time.Hour).Unix() }
	for _, tc := range []struct {
		name string
		v    *Verifier
		mod  func(jwt.MapClaims)
		want error
	}{
		{"an hour", v, nil, nil},
		{"exactly the cap", v, func(c jwt.MapClaims) { c["exp"] = now.Add(24 * time.Hour).Unix() }, nil},
		{"years from iat", v, years, ErrLifetime},
		{"years without iat", v, func(c jwt.MapClaims) { years(c); delete(c, "iat") }, ErrLifetime},
		{"a day and a second without iat", v, func(c jwt.MapClaims) { c["exp"] = now.Add(24*time.Hour + time.Second).Unix(); delete(c, "iat") }, ErrLifetime},
		// Issued long ago, expiring soon: the lifetime is exp - iat.
		{"old iat, long lifetime", v, func(c jwt.MapClaims) { c["iat"] = now.Add(-48 * time.Hour).Unix() }, ErrLifetime},
		{"no cap", vNoCap, years, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, secret, claims(tc.mod), nil))
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err != nil && Reason(err) != "lifetime_too_long" {
				t.Errorf("reason %q", Reason(err))
			}
		})
	}
}

// TestPrincipalKey: limits key principals by issuer and subject, and
// tokens without a subject by the token itself.
func TestPrincipalKey(t *testing.T) {
	v := newVerifier(t, authCfg())
	key := func(mod func(jwt.MapClaims)) string {
		p, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, secret, claims(mod), nil))
		if err != nil {
			t.Fatal(err)
		}
		return p.Key
	}
	alice1 := key(nil)
	alice2 := key(func(c jwt.MapClaims) { c["exp"] = now.Add(2 * time.Hour).Unix() })
	bob := key(func(c jwt.MapClaims) { c["sub"] = "bob" })
	otherIss := key(func(c jwt.MapClaims) { c["iss"] = "https://other" })
	anon1 := key(func(c jwt.MapClaims) { delete(c, "sub") })
	anon2 := key(func(c jwt.MapClaims) { delete(c, "sub"); c["exp"] = now.Add(2 * time.Hour).Unix() })
	if alice1 != alice2 || alice1 == "" {
		t.Errorf("one subject, two tokens: %q %q", alice1, alice2)
	}
	for _, k := range []string{bob, otherIss, anon1, anon2} {
		if k == alice1 {
			t.Errorf("distinct principals share key %q", k)
		}
	}
	if anon1 == anon2 || strings.Contains(alice1, "alice") {
		t.Errorf("anonymous tokens %q %q; alice %q", anon1, anon2, alice1)
	}
}

// waitReady waits (bounded) for v's first JWKS fetch, which runs in the
// background.
func waitReady(t *testing.T, v *Verifier) {
	t.Helper()
	for i := 0; !v.Ready(); i++ {
		if i == 1000 {
			t.Fatal("the JWKS was never fetched")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestScopeMergesStar: a tileset's scoped grants include those of "*",
// whichever came first, and a tileset without its own gets "*"'s.
func TestScopeMergesStar(t *testing.T) {
	z := func(lo, hi uint8) *scope.Grant {
		g, err := scope.Compile(config.Scope{Zoom: fmt.Sprintf("%d-%d", lo, hi)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &g
	}
	for _, order := range [][]string{{"*", "city"}, {"city", "*"}} {
		p := &Principal{}
		for _, name := range order {
			if name == "*" {
				p.grant(name, z(0, 3))
			} else {
				p.grant(name, z(5, 6))
			}
		}
		for _, tc := range []struct {
			tileset string
			zooms   map[uint8]bool
		}{
			{"city", map[uint8]bool{2: true, 4: false, 5: true, 7: false}},
			{"other", map[uint8]bool{2: true, 5: false}},
		} {
			gs, ok := p.Scope(tc.tileset)
			if !ok {
				t.Fatalf("%v: %s not granted", order, tc.tileset)
			}
			for zoom, want := range tc.zooms {
				if got, _ := scope.Judge(gs, zoom, 0, 0); got != want {
					t.Errorf("%v: %s z%d allowed %v, want %v", order, tc.tileset, zoom, got, want)
				}
			}
		}
	}
}
