package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/scope"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// attackTokens seed the JWT fuzzer with known attacks.
func attackTokens(f *testing.F) []string {
	pub, _ := os.ReadFile("../testdata/keys/rsa.pub.pem")
	exp := time.Now().Add(time.Hour).Unix()
	body := b64(`{"exp":` + itoa(exp) + `,"tilesets":"*"}`)
	sign := func(hdr map[string]any, c jwt.MapClaims, key []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
		for k, v := range hdr {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(key)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	good := jwt.MapClaims{"exp": exp, "tilesets": []string{"a"}}
	return []string{
		sign(nil, good, secret), // the one valid seed
		b64(`{"alg":"none","typ":"JWT"}`) + "." + body + ".",
		b64(`{"alg":"NONE"}`) + "." + body + ".",
		b64(`{"alg":"nOnE"}`) + "." + body + "." + b64("sig"),
		sign(nil, good, pub), // HS256 signed with the RSA public key
		sign(map[string]any{"kid": "../../../../dev/null"}, good, []byte("00000000000000000000000000000000")),
		sign(map[string]any{"kid": "' OR '1'='1' --"}, good, []byte("00000000000000000000000000000000")),
		sign(map[string]any{"jku": "http://evil.example/jwks.json", "x5u": "http://evil.example/c.pem"}, good, []byte("evil-evil-evil-evil-evil-evil-xx")),
		sign(nil, jwt.MapClaims{"exp": exp, "tilesets": []string{strings.Repeat("t", 6000)}}, secret),
		sign(nil, jwt.MapClaims{"exp": "tomorrow", "tilesets": "*"}, secret),
		sign(nil, jwt.MapClaims{"exp": 1e308, "tilesets": "*"}, secret),
		sign(nil, jwt.MapClaims{"exp": exp, "tilesets": []any{[]any{"a"}, map[string]any{}}}, secret),
		b64(`{"alg":"HS256"}`) + "." + b64("not json") + "." + b64("x"),
		b64("not json") + "." + body + "." + b64("x"),
		"a.b.c", "...", "", strings.Repeat("A", 9000),
		b64(`{"alg":"HS256","crit":["exp"]}`) + "." + body + ".x",
		b64(`{"alg":"RS256","kid":"x"}`) + "." + body + "." + b64(strings.Repeat("s", 256)),
	}
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// FuzzVerify: no input panics, and anything accepted really carries an
// HS256 signature by the secret (the fuzzer cannot forge one).
func FuzzVerify(f *testing.F) {
	a := authCfg()
	a.PublicKeys = []string{"../testdata/keys/rsa.pub.pem", "../testdata/keys/ec.pub.pem", "../testdata/keys/ed25519.pub.pem"}
	a.Algorithms = []string{"HS256", "RS256", "ES256", "EdDSA"}
	v, err := New(f.Context(), a, Deps{VerifiedCacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range attackTokens(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(t.Context(), tok)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid token: ") {
				t.Fatalf("error outside the invalid family: %v", err)
			}
			return
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token of %d parts", len(parts))
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(parts[0] + "." + parts[1]))
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		if !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("accepted a token not signed with the secret: %q", tok)
		}
		if p.Expires.IsZero() {
			t.Fatal("accepted a token without exp")
		}
	})
}

// FuzzTokenFromRequest: arbitrary header, cookie and query values never
// panic, and the first source present is the one returned.
func FuzzTokenFromRequest(f *testing.F) {
	v, err := New(f.Context(), authCfg(), Deps{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add("Bearer abc", "def", "access_token=ghi")
	f.Add("", "", "access_token=a&access_token=b")
	f.Add("Basic dXNlcjpwdw==", "x", "")
	f.Add("Bearer", "", "access_token=%zz")
	f.Add("", "tileproxy_token=;tileproxy_token=x", "access_token=")
	f.Add("", "x; tileproxy_token=y", "access_token=z")
	f.Add("bEaReR  spaced ", "", "a=1;access_token=2")
	f.Fuzz(func(t *testing.T, authz, cookie, query string) {
		r := httptest.NewRequest("GET", "/tiles/a/0/0/0.png", nil)
		r.URL.RawQuery = query
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if cookie != "" {
			r.Header["Cookie"] = []string{v.CookieName() + "=" + cookie}
		}
		tok, err := v.TokenFromRequest(r)
		if err == nil && tok == "" {
			t.Fatal("empty token without an error")
		}
		if err != nil {
			return
		}
		if authz != "" {
			if !strings.Contains(authz, tok) {
				t.Fatalf("header present but %q was used", tok)
			}
			return
		}
		if c, cerr := r.Cookie(v.CookieName()); cerr == nil && tok != c.Value {
			t.Fatalf("cookie %q present but %q was used", c.Value, tok)
		}
	})
}

// FuzzSessionCookie: whenever the fast path answers, Request.Cookie gives
// the same cookie value for the same header.
func FuzzSessionCookie(f *testing.F) {
	for _, s := range []string{
		"tileproxy_token=a.b.c",
		"other=1; tileproxy_token=a.b-_c",
		" tileproxy_token=abc ;x=y",
		"tileproxy_token=\"abc\"; tileproxy_token=def",
		"tileproxy_token =abc; tileproxy_token=def",
		"bad name=1; tileproxy_token=t",
		"tileproxy_token=; tileproxy_token=x",
		"\ttileproxy_token=abc\t",
		"\rtileproxy_token=abc; tileproxy_token=def",
		strings.Repeat("a=b;", 3001) + "tileproxy_token=x",
	} {
		f.Add(s)
	}
	f.Add("tileproxy_token=a.b.c; __Host-tileproxy_token=d.e.f")
	f.Add("__Host-tileproxy_token=a.b.c")
	f.Fuzz(func(t *testing.T, line string) {
		for _, name := range []string{CookieName, SecureCookieName} {
			got, ok := sessionCookie([]string{line}, name)
			if !ok {
				continue
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header["Cookie"] = []string{line}
			c, err := r.Cookie(name)
			if err != nil || c.Value != got {
				t.Fatalf("%s: fast path %q, Request.Cookie %v %v", name, got, c, err)
			}
		}
	})
}

// FuzzIssuerClaims: whatever JSON a provider puts in a token's claims,
// the audience check and the grant rules answer (grants, or a refusal)
// and never panic; every tileset granted by a pattern exists.
func FuzzIssuerClaims(f *testing.F) {
	f.Add(`{"aud":"tileproxy","scope":"tiles:city openid","realm_access":{"roles":["analysts"]}}`)
	f.Add(`{"aud":["x","tileproxy"],"client_id":7,"realm_access":"analysts","a.b":{"c":["city"]}}`)
	f.Add(`{"aud":{"x":1},"scope":["tiles:city",3],"cognito:groups":[null]}`)
	f.Add(`{"realm_access":{"roles":["admins","analysts"]},"a.b":{"c":"parks nosuch"}}`)
	is := &issuer{
		audience: []string{"tileproxy"},
		grants: []grantRule{
			{claim: "scope", prefix: "tiles:"},
			{claim: "realm_access.roles", values: map[string][]grantValue{"analysts": {{tileset: "roads"}}, "admins": {{tileset: "*"}}}},
			{claim: "a.b.c", prefix: "", suffix: ""},
			{claim: "cognito:groups", values: map[string][]grantValue{"maps": {{tileset: "city"}}}},
		},
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var claims map[string]any
		if json.Unmarshal([]byte(doc), &claims) != nil {
			return
		}
		is.checkAudience(claims)
		is.audienceClaim = "client_id"
		is.checkAudience(claims)
		is.audienceClaim = ""
		p := &Principal{}
		if err := is.grant(claims, knownTileset, p); err != nil {
			if !errors.Is(err, ErrBadGrants) {
				t.Fatalf("grant error %v is not ErrBadGrants", err)
			}
			return
		}
		for _, n := range p.tilesets {
			if !knownTileset(n) {
				t.Fatalf("granted %q, which is no tileset", n)
			}
		}
	})
}

// FuzzScopeClaim: a grants claim of any shape is read whole or refused
// with a 401 (ErrInvalid), never half-understood or a panic; whatever a
// scoped object grants is within the scopes it names.
func FuzzScopeClaim(f *testing.F) {
	f.Add(`{"city":{"zoom":"0-14","bbox":[-10,40,5,52],"areas":["north"],"layers":["roads"]},"roads":{}}`)
	f.Add(`{"*":{"zoom":"3"}}`)
	f.Add(`{"city":{"zoom":"14-0"}}`)
	f.Add(`{"city":{"bbox":[1,2,3]}}`)
	f.Add(`{"city":{"areas":["nowhere"]}}`)
	f.Add(`{"city":{"zoom":7}}`)
	f.Add(`{"city":{"extra":1}}`)
	f.Add(`["city","*"]`)
	north, err := area.Parse("north", []byte(`{"type":"Polygon","coordinates":[[[0,50],[10,50],[10,60],[0,60],[0,50]]]}`))
	if err != nil {
		f.Fatal(err)
	}
	areas := area.Set{"north": north}
	f.Fuzz(func(t *testing.T, doc string) {
		var claim any
		if json.Unmarshal([]byte(doc), &claim) != nil {
			return
		}
		p := &Principal{}
		if err := p.setGrants(claim, areas); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v is not a 401", err)
			}
			return
		}
		for _, sg := range append(p.scoped, scopedGrants{name: "*", grants: p.scopedAll}) {
			for _, g := range sg.grants {
				ok, _ := scope.Judge([]scope.Grant{g}, 31, 0, 0)
				if ok {
					t.Fatalf("%s: a scope allowed zoom 31", sg.name)
				}
			}
		}
	})
}
