package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"go.yaml.in/yaml/v3"

	"github.com/tileproxy/tileproxy/config"
)

// providerCase is a file of testdata/idp: an issuer entry as its docs
// would have it configured, a token's claims as the provider documents
// them, and the tilesets the rules must grant.
type providerCase struct {
	Issuer config.Issuer  `yaml:"issuer"`
	Claims map[string]any `yaml:"claims"`
	Want   []string       `yaml:"want"`
}

var idpTilesets = []string{"city", "roads", "parks"}

func knownTileset(name string) bool { return slices.Contains(idpTilesets, name) }

// TestProviderTokenShapes: each provider's documented token shape,
// signed by a test key, maps to exactly the tilesets its config grants,
// and the config passes config.Validate as a user would write it.
func TestProviderTokenShapes(t *testing.T) {
	files, _ := filepath.Glob("../testdata/idp/*.yaml")
	if len(files) < 6 {
		t.Fatalf("%d provider files, want at least 6", len(files))
	}
	k := newKeys(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var pc providerCase
			if err := yaml.Unmarshal(data, &pc); err != nil {
				t.Fatal(err)
			}
			disc := false
			pc.Issuer.Discovery = &disc
			pc.Issuer.PublicKeys = k.pems
			v := issuerVerifier(t, pc.Issuer)
			c := jwt.MapClaims(pc.Claims)
			c["iat"], c["exp"] = now.Unix(), now.Add(time.Hour).Unix()
			p, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, c, nil))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, name := range idpTilesets {
				if p.Allows(name) {
					got = append(got, name)
				}
			}
			if !slices.Equal(got, pc.Want) {
				t.Fatalf("grants %v, want %v", got, pc.Want)
			}
			// The same token for another audience, or from another
			// issuer, grants nothing.
			c2 := jwt.MapClaims{}
			for k, v := range c {
				c2[k] = v
			}
			c2["iss"] = "https://elsewhere.example.com/"
			if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, c2, nil)); !errors.Is(err, ErrBadIssuer) {
				t.Fatalf("another issuer: %v, want ErrBadIssuer", err)
			}
		})
	}
}

// issuerVerifier builds a verifier with one issuers entry and no
// self-issued keys, validating the config on the way.
func issuerVerifier(t *testing.T, is config.Issuer) *Verifier {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.Issuers = []config.Issuer{is}
	for _, n := range idpTilesets {
		cfg.Tilesets = append(cfg.Tilesets, config.Tileset{Name: n, Bucket: "tiles", Prefix: n + "/"})
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := New(t.Context(), cfg.Auth, Deps{Now: func() time.Time { return now }, Tilesets: knownTileset})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestIssuerRules: audience shapes, azp, grant patterns and values, and
// claims of the wrong type, for one issuer with PEM keys.
func TestIssuerRules(t *testing.T) {
	k := newKeys(t)
	disc := false
	is := config.Issuer{
		Issuer: "https://idp.example.com/realms/maps", Discovery: &disc, PublicKeys: k.pems,
		Audience: config.StringList{"tileproxy"}, AuthorizedParties: []string{"maps-web"},
		Grants: []config.GrantRule{
			{Claim: "scope", Pattern: "tiles:{tileset}"},
			{Claim: "realm_access.roles", Values: map[string][]config.GrantValue{"analysts": config.Grants("city", "roads"), "admins": config.Grants("*")}},
			{Claim: "department", Values: map[string][]config.GrantValue{"admins": config.Grants("*")}},
		},
	}
	v := issuerVerifier(t, is)
	base := func(mod func(jwt.MapClaims)) string {
		c := jwt.MapClaims{"iss": is.Issuer, "sub": "maria", "aud": "tileproxy", "azp": "maps-web",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mod != nil {
			mod(c)
		}
		return sign(t, jwt.SigningMethodRS256, k.rsa, c, nil)
	}
	for _, tc := range []struct {
		name  string
		token string
		err   error
		want  []string
	}{
		{"scope pattern", base(func(c jwt.MapClaims) { c["scope"] = "openid tiles:city tiles:nosuch profile" }), nil, []string{"city"}},
		{"roles values", base(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []any{"analysts"}} }), nil, []string{"city", "roads"}},
		{"star grants all", base(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []any{"admins"}} }), nil, idpTilesets},
		{"union", base(func(c jwt.MapClaims) {
			c["scope"] = "tiles:parks"
			c["realm_access"] = map[string]any{"roles": []any{"analysts"}}
		}), nil, idpTilesets},
		{"nothing matched", base(func(c jwt.MapClaims) { c["scope"] = "openid" }), nil, nil},
		// Only scope and scp are space-separated lists: any other string
		// claim is one value, so a name the user chose ("x admins")
		// cannot match a rule's value.
		{"a string claim is one value", base(func(c jwt.MapClaims) { c["department"] = "x admins" }), nil, nil},
		{"a string claim matched whole", base(func(c jwt.MapClaims) { c["department"] = "admins" }), nil, idpTilesets},
		{"roles as one string", base(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": "analysts admins"} }), nil, nil},
		{"aud list", base(func(c jwt.MapClaims) { c["aud"] = []any{"account", "tileproxy"}; c["scope"] = "tiles:city" }), nil, []string{"city"}},
		{"aud other", base(func(c jwt.MapClaims) { c["aud"] = "account" }), ErrBadAudience, nil},
		{"aud missing", base(func(c jwt.MapClaims) { delete(c, "aud") }), ErrBadAudience, nil},
		{"azp other", base(func(c jwt.MapClaims) { c["azp"] = "someone-else" }), ErrBadAudience, nil},
		{"azp missing", base(func(c jwt.MapClaims) { delete(c, "azp") }), ErrBadAudience, nil},
		{"scope a number", base(func(c jwt.MapClaims) { c["scope"] = 42 }), ErrBadGrants, nil},
		{"roles an object", base(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": map[string]any{"a": 1}} }), ErrBadGrants, nil},
		{"roles with a number", base(func(c jwt.MapClaims) { c["realm_access"] = map[string]any{"roles": []any{"analysts", 7}} }), ErrBadGrants, nil},
		{"realm_access a string", base(func(c jwt.MapClaims) { c["realm_access"] = "analysts" }), nil, nil},
		{"expired", base(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() }), ErrExpired, nil},
		{"iss a number", base(func(c jwt.MapClaims) { c["iss"] = 7 }), ErrMalformed, nil},
		{"hs256 from an issuer", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"iss": is.Issuer, "aud": "tileproxy", "azp": "maps-web",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "tiles:city"}, nil), ErrBadAlgorithm, nil},
		{"es256 allowed by default", sign(t, jwt.SigningMethodES256, k.ec, jwt.MapClaims{"iss": is.Issuer, "aud": "tileproxy", "azp": "maps-web",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "scope": "tiles:roads"}, nil), nil, []string{"roads"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(t.Context(), tc.token)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%v does not match ErrInvalid (401)", err)
				}
				return
			}
			var got []string
			for _, n := range idpTilesets {
				if p.Allows(n) {
					got = append(got, n)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("grants %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSpaceSeparated(t *testing.T) {
	for path, want := range map[string]bool{"scope": true, "scp": true, "ext.scp": true, "groups": false, "realm_access.roles": false, "name": false, "scopes": false} {
		if got := spaceSeparated(path); got != want {
			t.Errorf("spaceSeparated(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestLookupClaim(t *testing.T) {
	claims := map[string]any{
		"https://example.com/tiles": []any{"a"},
		"cognito:groups":            []any{"b"},
		"realm_access":              map[string]any{"roles": []any{"c"}},
		"a.b":                       map[string]any{"c": "dotted key"},
	}
	for path, want := range map[string]string{
		"https://example.com/tiles": "[a]", "cognito:groups": "[b]", "realm_access.roles": "[c]", "a.b.c": "dotted key",
		"realm_access.nope": "<nil>", "nope": "<nil>",
	} {
		v, _ := lookupClaim(claims, path)
		if got := fmt.Sprint(v); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}

// idpServer is an OpenID provider's discovery and JWKS endpoints, with
// whatever documents the test sets, counting requests.
type idpServer struct {
	srv      *httptest.Server
	requests atomic.Int32
	disco    atomic.Value // string: the discovery document, "" for the default
	jwks     atomic.Value // string
	// moved, when set, is a path and where it redirects (302).
	moved atomic.Value // [2]string
}

func newIDPServer(t *testing.T) *idpServer {
	s := &idpServer{}
	s.disco.Store("")
	s.jwks.Store(`{"keys":[]}`)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if m, _ := s.moved.Load().([2]string); m[0] == r.URL.Path {
			http.Redirect(w, r, m[1], http.StatusFound)
			return
		}
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			d := s.disco.Load().(string)
			if d == "" {
				d = fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, s.srv.URL, s.srv.URL+"/keys")
			}
			w.Write([]byte(d))
		case "/keys":
			w.Write([]byte(s.jwks.Load().(string)))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// TestDiscovery: keys found through discovery verify; an unknown iss is
// refused without a request; documents that name another issuer, point
// the keys at another host, are malformed or enormous leave the issuer
// without keys (401, not ready), never a panic.
func TestDiscovery(t *testing.T) {
	k := newKeys(t)
	set := jwkset.NewMemoryStorage()
	jwk, err := jwkset.NewJWKFromKey(&k.rsa.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgRS256}})
	if err != nil {
		t.Fatal(err)
	}
	set.KeyWrite(t.Context(), jwk)
	doc, _ := set.JSONPublic(t.Context())

	good := func(s *idpServer) string {
		return sign(t, jwt.SigningMethodRS256, k.rsa, jwt.MapClaims{"iss": s.srv.URL, "aud": "tileproxy", "scope": "tiles:city",
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, map[string]any{"kid": "k1"})
	}
	for _, tc := range []struct {
		name  string
		disco func(s *idpServer) string
		jwks  string
		ok    bool
	}{
		{"discovered", nil, string(doc), true},
		{"another issuer named", func(s *idpServer) string {
			return fmt.Sprintf(`{"issuer":"https://evil.example.com","jwks_uri":%q}`, s.srv.URL+"/keys")
		}, string(doc), false},
		{"keys on another host", func(s *idpServer) string {
			// A real JWKS with the right keys, but on another host (port):
			// only the host check can refuse it.
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(doc) }))
			t.Cleanup(other.Close)
			return fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q}`, s.srv.URL, other.URL+"/keys")
		}, string(doc), false},
		{"keys redirected to another host", func(s *idpServer) string {
			// The jwks_uri is on the issuer's host, and redirects to a
			// real JWKS elsewhere: a followed redirect would verify.
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(doc) }))
			t.Cleanup(other.Close)
			s.moved.Store([2]string{"/keys", other.URL + "/keys"})
			return ""
		}, string(doc), false},
		{"discovery redirected to another host", func(s *idpServer) string {
			// The other host answers a discovery document that names the
			// issuer and keys on its own host, as a hostile one would.
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/keys" {
					w.Write(doc)
					return
				}
				fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, s.srv.URL, s.srv.URL+"/keys")
			}))
			t.Cleanup(other.Close)
			s.moved.Store([2]string{"/.well-known/openid-configuration", other.URL + "/.well-known/openid-configuration"})
			return ""
		}, string(doc), false},
		{"not JSON", func(*idpServer) string { return "<html>" }, string(doc), false},
		{"jwks_uri not a URL", func(s *idpServer) string { return fmt.Sprintf(`{"issuer":%q,"jwks_uri":"::"}`, s.srv.URL) }, string(doc), false},
		{"enormous", func(s *idpServer) string {
			return fmt.Sprintf(`{"issuer":%q,"jwks_uri":%q,"pad":"%s"}`, s.srv.URL, s.srv.URL+"/keys", strings.Repeat("x", maxDiscoveryBytes))
		}, string(doc), false},
		{"jwks not a JWKS", nil, `{"keys": 7}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newIDPServer(t)
			if tc.disco != nil {
				s.disco.Store(tc.disco(s))
			}
			s.jwks.Store(tc.jwks)
			yes := true
			fetched := make(chan bool, 1) // the first fetch's outcome
			v, err := New(t.Context(), config.Auth{Leeway: config.Duration(time.Second), Issuers: []config.Issuer{{
				Issuer: s.srv.URL, Discovery: &yes, Audience: config.StringList{"tileproxy"},
				Grants: []config.GrantRule{{Claim: "scope", Pattern: "tiles:{tileset}"}},
			}}}, Deps{Now: func() time.Time { return now }, Tilesets: knownTileset, JWKSRefreshInterval: time.Hour,
				OnJWKSRefresh: func(ok bool, _ int) {
					select {
					case fetched <- ok:
					default:
					}
				}})
			if err != nil {
				t.Fatal(err)
			}
			if tc.ok {
				waitReady(t, v)
				p, err := v.Verify(t.Context(), good(s))
				if err != nil || !p.Allows("city") {
					t.Fatalf("discovered keys: %v", err)
				}
				// A token naming an issuer nobody configured: 401, and
				// no request to anyone.
				before := s.requests.Load()
				other := sign(t, jwt.SigningMethodRS256, k.rsa, jwt.MapClaims{"iss": "https://unknown.example.com", "aud": "tileproxy",
					"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, map[string]any{"kid": "k2"})
				if _, err := v.Verify(t.Context(), other); !errors.Is(err, ErrBadIssuer) || s.requests.Load() != before {
					t.Fatalf("unknown iss: %v, %d requests", err, s.requests.Load()-before)
				}
				return
			}
			// The first attempt (discovery, then the JWKS) has ended, and
			// failed: a document that should be refused would otherwise
			// have brought the keys, and the token below would verify.
			select {
			case ok := <-fetched:
				if ok {
					t.Fatal("the bad document was accepted")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no fetch was attempted")
			}
			if v.Ready() {
				t.Fatal("ready with a bad discovery")
			}
			if _, err := v.Verify(t.Context(), good(s)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("token with no usable keys: %v, want a 401", err)
			}
		})
	}
}

// TestSelfIssuedBesideIssuers: with both configured, a token of an
// issuers entry is checked by it, any other by the self-issued rules.
func TestSelfIssuedBesideIssuers(t *testing.T) {
	k := newKeys(t)
	no := false
	a := authCfg()
	a.Issuers = []config.Issuer{{Issuer: "https://idp.example.com", Discovery: &no, PublicKeys: k.pems,
		Audience: config.StringList{"tileproxy"}, Grants: []config.GrantRule{{Claim: "scope", Pattern: "tiles:{tileset}"}}}}
	v, err := New(t.Context(), a, Deps{Now: func() time.Time { return now }, Tilesets: knownTileset})
	if err != nil {
		t.Fatal(err)
	}
	self := sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) { c["tilesets"] = []string{"parks"} }), nil)
	if p, err := v.Verify(t.Context(), self); err != nil || !p.Allows("parks") {
		t.Fatalf("self-issued: %v", err)
	}
	// An HS256 token claiming the issuer's iss is not let through the
	// self-issued door.
	forged := sign(t, jwt.SigningMethodHS256, secret, claims(func(c jwt.MapClaims) {
		c["iss"] = "https://idp.example.com"
		c["aud"] = "tileproxy"
		c["scope"] = "tiles:city"
	}), nil)
	if _, err := v.Verify(t.Context(), forged); !errors.Is(err, ErrBadAlgorithm) {
		t.Fatalf("HS256 token with the issuer's iss: %v, want ErrBadAlgorithm", err)
	}
}
