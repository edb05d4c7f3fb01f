package auth

import (
	"cmp"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/scope"
)

// issuer verifies the tokens of one auth.issuers entry: its own keys
// (discovered, from a JWKS URL or PEM files), audience rules and grant
// rules. A token's iss selects it.
type issuer struct {
	iss           string
	parser        *jwt.Parser
	algorithms    []string
	publicKeys    []crypto.PublicKey
	jwks          *jwksKeys // nil with PEM keys only
	audience      []string
	audienceClaim string
	azp           []string
	grants        []grantRule
}

// grantRule is a config.GrantRule ready to apply, its scopes compiled.
type grantRule struct {
	claim          string
	prefix, suffix string       // around {tileset}, for a pattern rule
	scope          *scope.Grant // narrows a pattern rule's grants; nil: unscoped
	values         map[string][]grantValue
}

// grantValue is one tileset (or "*") a claim value grants, narrowed by
// scope when that is not nil.
type grantValue struct {
	tileset string
	scope   *scope.Grant
}

// compileScope compiles a configured scope; nil for an unconstrained one.
func compileScope(s config.Scope, areas area.Set) (*scope.Grant, error) {
	if s.Unconstrained() {
		return nil, nil
	}
	g, err := scope.Compile(s, areas)
	if err != nil {
		return nil, err
	}
	return &g, nil
}

func newIssuer(ctx context.Context, cfg config.Issuer, v *Verifier, deps Deps) (*issuer, error) {
	is := &issuer{
		iss:           cfg.Issuer,
		algorithms:    slices.Clone(cfg.Algorithms),
		audience:      slices.Clone(cfg.Audience),
		audienceClaim: cfg.AudienceClaim,
		azp:           slices.Clone(cfg.AuthorizedParties),
	}
	if len(is.algorithms) == 0 {
		is.algorithms = slices.Clone(config.DefaultIssuerAlgorithms)
	}
	keys, err := LoadPublicKeys(cfg.PublicKeys)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer %s: %w", cfg.Issuer, err)
	}
	is.publicKeys = keys
	if cfg.JWKSURL != "" || cfg.UsesDiscovery() {
		j := v.newJWKS(cfg.JWKSURL, deps)
		if cfg.JWKSURL == "" {
			j.issuer, j.hosts = cfg.Issuer, cfg.JWKSHosts
		}
		if is.jwks, err = newJWKSKeys(ctx, j); err != nil {
			return nil, fmt.Errorf("auth: issuer %s: jwks: %w", cfg.Issuer, err)
		}
	}
	for i, g := range cfg.Grants {
		r := grantRule{claim: g.Claim}
		if g.Pattern != "" {
			r.prefix, r.suffix, _ = strings.Cut(g.Pattern, "{tileset}")
		}
		if g.Scope != nil {
			if r.scope, err = compileScope(*g.Scope, v.areas); err != nil {
				return nil, fmt.Errorf("auth: issuer %s: grants[%d].scope: %w", cfg.Issuer, i, err)
			}
		}
		if len(g.Values) > 0 {
			r.values = map[string][]grantValue{}
		}
		for val, list := range g.Values {
			for _, gv := range list {
				sc, err := compileScope(gv.Scope, v.areas)
				if err != nil {
					return nil, fmt.Errorf("auth: issuer %s: grants[%d].values[%q]: %w", cfg.Issuer, i, val, err)
				}
				r.values[val] = append(r.values[val], grantValue{tileset: gv.Tileset, scope: sc})
			}
		}
		is.grants = append(is.grants, r)
	}
	// The audience is checked by checkAudience, which knows
	// audience_claim; the library checks the rest.
	is.parser = jwt.NewParser(
		jwt.WithValidMethods(is.algorithms),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(v.now),
		jwt.WithIssuer(cfg.Issuer),
	)
	return is, nil
}

// keyFor is Verifier.keyFor for this issuer's keys; never an HMAC secret.
func (is *issuer) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		return nil, ErrUnknownKey
	}
	return keySet(ctx, t, is.publicKeys, is.jwks)
}

// checkAudience matches the configured audiences against aud, or against
// audience_claim, and requires azp among the configured parties.
func (is *issuer) checkAudience(claims jwt.MapClaims) error {
	var got []string
	if is.audienceClaim != "" {
		v, ok := lookupClaim(claims, is.audienceClaim)
		if !ok {
			return ErrBadAudience
		}
		var err error
		if got, err = claimStrings(v, false); err != nil {
			return ErrBadAudience
		}
	} else {
		aud, err := claims.GetAudience()
		if err != nil {
			return ErrBadAudience
		}
		got = aud
	}
	if !slices.ContainsFunc(got, func(a string) bool { return slices.Contains(is.audience, a) }) {
		return ErrBadAudience
	}
	if len(is.azp) > 0 {
		azp, ok := claims["azp"].(string)
		if !ok || !slices.Contains(is.azp, azp) {
			return ErrBadAudience
		}
	}
	return nil
}

// grant applies every rule to claims, adding what each grants to p. A
// claim of a type no rule can read (a number, an object where values
// were expected) is refused, never half-understood.
func (is *issuer) grant(claims jwt.MapClaims, known func(string) bool, p *Principal) error {
	for _, r := range is.grants {
		v, ok := lookupClaim(claims, r.claim)
		if !ok {
			continue
		}
		vals, err := claimStrings(v, spaceSeparated(r.claim))
		if err != nil {
			return ErrBadGrants
		}
		for _, s := range vals {
			if r.values == nil {
				rest, okPrefix := strings.CutPrefix(s, r.prefix)
				name, okSuffix := strings.CutSuffix(rest, r.suffix)
				if okPrefix && okSuffix && name != "" && known(name) {
					p.grant(name, r.scope)
				}
				continue
			}
			for _, gv := range r.values[s] {
				p.grant(gv.tileset, gv.scope)
			}
		}
	}
	return nil
}

// lookupClaim follows a dotted path into claims. At each level a key that
// matches the whole remaining path wins (a claim named
// "https://example.com/tiles" or "cognito:groups"), then the longest
// dotted prefix that names an object.
func lookupClaim(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	for i := len(path) - 1; i > 0; i-- {
		if path[i] != '.' {
			continue
		}
		if sub, ok := claims[path[:i]].(map[string]any); ok {
			if v, ok := lookupClaim(sub, path[i+1:]); ok {
				return v, true
			}
		}
	}
	return nil, false
}

// claimStrings reads a claim as values: an array as its strings; a
// string as one value, or, with split, as its space-separated words.
// Anything else is an error.
func claimStrings(v any, split bool) ([]string, error) {
	switch v := v.(type) {
	case string:
		if !split {
			return []string{v}, nil
		}
		return strings.Fields(v), nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, ErrBadGrants
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, ErrBadGrants
}

// spaceSeparated reports a claim whose string value is a space-separated
// list by definition: OAuth's scope (RFC 8693 §4.2, RFC 9068), and scp as
// Entra ID and Okta write it. Every other string claim is one value, so
// that a claim a user can influence (a display name "x admins") never
// matches a rule's value ("admins") by one of its words.
func spaceSeparated(path string) bool {
	name := path[strings.LastIndexByte(path, '.')+1:]
	return name == "scope" || name == "scp"
}

// maxDiscoveryBytes bounds an OpenID discovery document (real ones are a
// few KiB).
const maxDiscoveryBytes = 256 << 10

// discover reads the issuer's OpenID discovery document for its jwks_uri.
// The document must name the issuer exactly (OpenID Connect Discovery
// §4.3), and the jwks_uri must be on the issuer's host or one of
// jwks_hosts: a document that points the keys elsewhere would let whoever
// answers there mint tokens.
func (j *jwksKeys) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(j.issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if err := redirected(resp); err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery: status %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes+1))
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	if len(data) > maxDiscoveryBytes {
		return "", fmt.Errorf("discovery: document larger than %d bytes", maxDiscoveryBytes)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("discovery: not a discovery document: %w", err)
	}
	if doc.Issuer != j.issuer {
		return "", fmt.Errorf("discovery: the document names issuer %q, not %q", doc.Issuer, j.issuer)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || (ju.Scheme != "https" && ju.Scheme != "http") || ju.Host == "" {
		return "", fmt.Errorf("discovery: jwks_uri %q is not an http(s) URL", doc.JWKSURI)
	}
	iu, _ := url.Parse(j.issuer)
	if ju.Scheme == "http" && iu.Scheme == "https" {
		return "", fmt.Errorf("discovery: jwks_uri %q is plain http for an https issuer", doc.JWKSURI)
	}
	if !strings.EqualFold(ju.Host, iu.Host) && !slices.ContainsFunc(j.hosts, func(h string) bool { return strings.EqualFold(h, ju.Host) }) {
		return "", fmt.Errorf("discovery: jwks_uri host %q is not the issuer's (%q); list it in jwks_hosts to allow it", ju.Host, iu.Host)
	}
	return doc.JWKSURI, nil
}

// errNoIssuer: a token whose iss names no issuers entry, with no
// self-issued keys configured.
var errNoIssuer = errors.New("no such issuer")

// unverifiedIssuer reads a token's iss without checking anything, to
// choose whose keys check it.
func unverifiedIssuer(token string) (string, error) {
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		return "", ErrMalformed
	}
	iss, ok := claims["iss"].(string)
	if !ok && claims["iss"] != nil {
		return "", ErrMalformed
	}
	return iss, nil
}

// newJWKS is the JWKS keeper for url with the verifier's settings.
func (v *Verifier) newJWKS(u string, deps Deps) *jwksKeys {
	j := &jwksKeys{
		url:      u,
		timeout:  cmp.Or(deps.JWKSTimeout, 10*time.Second),
		interval: cmp.Or(deps.JWKSRefreshInterval, v.jwksRefresh, 5*time.Minute),
		wait:     cmp.Or(deps.JWKSUnknownKIDWait, 5*time.Millisecond),
		limiter:  rate.NewLimiter(rate.Every(cmp.Or(deps.JWKSUnknownKIDEvery, 5*time.Second)), 1),
		now:      deps.Now,
		log:      deps.Logger,
		// A key withdrawn from the JWKS must stop verifying at once,
		// also for tokens verified with it before.
		onRemoved: v.forgetVerified,
	}
	j.client = noRedirects(deps.HTTPClient)
	// tileproxy_jwks_keys counts the keys of every JWKS held.
	j.onRefresh = func(ok bool, _ int) {
		if deps.OnJWKSRefresh != nil {
			deps.OnJWKSRefresh(ok, v.keysHeld())
		}
	}
	v.kmu.Lock()
	v.keepers = append(v.keepers, j)
	v.kmu.Unlock()
	return j
}

// keysHeld is the number of keys in every JWKS the verifier keeps.
func (v *Verifier) keysHeld() int {
	v.kmu.Lock()
	ks := slices.Clone(v.keepers)
	v.kmu.Unlock()
	n := 0
	for _, j := range ks {
		if j.store != nil {
			n += j.count()
		}
	}
	return n
}
