package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/scope"
)

// MaxTokenBytes bounds the token accepted from any source; real tokens are
// a few hundred bytes, and parsing megabytes of base64 is a cheap DoS.
const MaxTokenBytes = 8 << 10

// CookieName is the session cookie set by POST /auth/session when the
// cookie is not Secure (plain-HTTP development).
const CookieName = "tileproxy_token"

// SecureCookieName is the session cookie when auth.cookie.secure is on.
// Browsers accept a __Host- cookie only when it is Secure, has Path=/
// and no Domain, so a sibling subdomain cannot plant or shadow it.
const SecureCookieName = "__Host-" + CookieName

// CookieNameFor returns the session cookie's name for auth.cookie.secure.
func CookieNameFor(secure bool) string {
	if secure {
		return SecureCookieName
	}
	return CookieName
}

// Deps are the Verifier's collaborators; zero values get defaults.
type Deps struct {
	// Now is the clock used for exp/nbf/iat; time.Now when nil.
	Now func() time.Time
	// HTTPClient fetches the JWKS; a client of its own when nil.
	HTTPClient *http.Client
	// Logger receives JWKS refresh failures; slog.Default() when nil.
	Logger *slog.Logger
	// JWKSRefreshInterval overrides auth.jwks_refresh when not 0.
	JWKSRefreshInterval time.Duration
	// JWKSTimeout bounds one JWKS fetch; 10 s when 0.
	JWKSTimeout time.Duration
	// JWKSUnknownKIDEvery limits refreshes caused by an unknown kid to
	// one per this period; 5 s when 0.
	JWKSUnknownKIDEvery time.Duration
	// JWKSUnknownKIDWait is the longest a request with an unknown kid
	// waits for the refresh it asked for; 5 ms when 0.
	JWKSUnknownKIDWait time.Duration
	// OnJWKSRefresh, when set, is told each JWKS fetch's outcome and how
	// many keys are held after it, over every JWKS.
	OnJWKSRefresh func(ok bool, keys int)
	// Tilesets tells whether a tileset of that name is configured: a
	// pattern grant rule grants only those. Nil accepts every name.
	Tilesets func(name string) bool
	// VerifiedCacheSize bounds the cache of verified tokens; 10,000 when 0,
	// negative disables it.
	VerifiedCacheSize int
	// Areas are the configured areas scopes may name; nil: none.
	Areas area.Set
	// Revoked, when set, says whether a token of issuer iss ("" for a
	// self-issued token), subject sub and ID jti is revoked; it is asked
	// on every verification, the cached ones included.
	Revoked func(iss, sub, jti string) bool
}

// verifiedMaxAge bounds how long a verification is reused, so a key
// withdrawn from the JWKS stops being honoured within this time even for
// tokens that have not expired.
const verifiedMaxAge = 10 * time.Minute

// verified is a cached successful verification.
type verified struct {
	p     *Principal
	until time.Time // min(exp + leeway, verified + verifiedMaxAge)
}

// Verifier checks tokens against the configured keys and claims rules.
// It is safe for concurrent use.
type Verifier struct {
	parser      *jwt.Parser
	algorithms  []string
	hmacSecret  []byte             // nil when no HS* algorithm is configured
	publicKeys  []crypto.PublicKey // from PEM files
	jwks        *jwksKeys          // nil without jwks_url
	grantsClaim string
	queryParam  string
	cookieName  string
	issuer      string
	leeway      time.Duration
	maxLifetime time.Duration // 0: no cap
	jwksRefresh time.Duration
	now         func() time.Time
	// selfIssued is set when the self-issued fields hold keys, or no
	// issuers are configured (then they are all there is).
	selfIssued bool
	// issuers are the auth.issuers entries by iss.
	issuers map[string]*issuer
	known   func(string) bool
	areas   area.Set // what scopes may name
	revoked func(iss, sub, jti string) bool
	kmu     sync.Mutex  // protects keepers
	keepers []*jwksKeys // every JWKS kept, for readiness and the key count
	// seen caches successful verifications by SHA-256 of the token, so a
	// map's hundreds of tile requests cost one signature check. Lookups
	// use Peek (a read lock) rather than Get (the write lock, to reorder):
	// every request looks up its token, and an exclusive lock there would
	// serialize all of them. Eviction is then oldest-verified first, which
	// costs at most a re-verification of a busy token.
	seen *lru.Cache[[sha256.Size]byte, verified]
}

// Principal is a verified caller.
type Principal struct {
	// Subject is the token's sub claim ("" when absent).
	Subject string
	// SubjectHash identifies the subject in logs without naming it: the
	// first 12 hex digits of its SHA-256 ("" without a subject).
	SubjectHash string
	// Expires is the token's exp.
	Expires time.Time
	// Key identifies the principal for per-principal limits: a hash of
	// issuer and subject, or of the token itself when it has no subject.
	Key string
	// issuer is the issuers entry that verified the token ("" for a
	// self-issued one) and jti its ID: what revocations name.
	issuer, jti string
	// all is true for an unscoped "*" grant.
	all      bool
	tilesets []string // unscoped grants
	// scoped are the scoped grants by tileset, each list holding those
	// of "*" too, so that a request finds its list in one scan and
	// allocates nothing; scopedAll are those of "*" (every tileset).
	scoped    []scopedGrants
	scopedAll []scope.Grant
}

// scopedGrants are the scoped grants of one tileset.
type scopedGrants struct {
	name   string
	grants []scope.Grant
}

// Issuer is the issuer of the auth.issuers entry that verified p's
// token, "" for a self-issued one.
func (p *Principal) Issuer() string { return p.issuer }

// Allows reports whether p may read some of tileset name.
func (p *Principal) Allows(name string) bool {
	_, ok := p.Scope(name)
	return ok
}

// Scope returns what p may read of tileset name: ok is false when p
// holds no grant for it, and grants nil when one of its grants is
// unscoped (the whole tileset).
func (p *Principal) Scope(name string) (grants []scope.Grant, ok bool) {
	if p.all || slices.Contains(p.tilesets, name) {
		return nil, true
	}
	for i := range p.scoped {
		if p.scoped[i].name == name {
			return p.scoped[i].grants, true
		}
	}
	if len(p.scopedAll) > 0 {
		return p.scopedAll, true
	}
	return nil, false
}

// grant adds a grant of tileset name (or "*") narrowed by g, or the
// whole tileset when g is nil.
func (p *Principal) grant(name string, g *scope.Grant) {
	switch {
	case g == nil && name == "*":
		p.all = true
	case g == nil:
		p.tilesets = append(p.tilesets, name)
	case name == "*":
		p.scopedAll = append(p.scopedAll, *g)
		for i := range p.scoped {
			p.scoped[i].grants = append(p.scoped[i].grants, *g)
		}
	default:
		for i := range p.scoped {
			if p.scoped[i].name == name {
				p.scoped[i].grants = append(p.scoped[i].grants, *g)
				return
			}
		}
		p.scoped = append(p.scoped, scopedGrants{name: name, grants: append(slices.Clone(p.scopedAll), *g)})
	}
}

// New builds a Verifier. ctx bounds the JWKS background refresh: cancel it
// when the server stops. An unreachable JWKS at start is not fatal (it is
// retried in the background); a malformed key file is.
func New(ctx context.Context, cfg config.Auth, deps Deps) (*Verifier, error) {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	v := &Verifier{
		algorithms:  slices.Clone(cfg.Algorithms),
		grantsClaim: cfg.GrantsClaim,
		queryParam:  cfg.QueryParam,
		cookieName:  CookieNameFor(cfg.Cookie.Secure),
		issuer:      cfg.Issuer,
		leeway:      cfg.Leeway.Duration(),
		maxLifetime: cfg.MaxTokenLifetime.Duration(),
		jwksRefresh: cfg.JWKSRefresh.Duration(),
		now:         deps.Now,
		selfIssued:  len(cfg.Issuers) == 0 || cfg.SelfIssued(),
		issuers:     make(map[string]*issuer, len(cfg.Issuers)),
		known:       deps.Tilesets,
		areas:       deps.Areas,
		revoked:     deps.Revoked,
	}
	if v.known == nil {
		v.known = func(string) bool { return true }
	}
	if size := deps.VerifiedCacheSize; size >= 0 {
		if size == 0 {
			size = 10_000
		}
		c, err := lru.New[[sha256.Size]byte, verified](size)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		v.seen = c
	}
	if v.selfIssued {
		if err := v.initSelfIssued(ctx, cfg, deps); err != nil {
			return nil, err
		}
	}
	for _, ic := range cfg.Issuers {
		is, err := newIssuer(ctx, ic, v, deps)
		if err != nil {
			return nil, err
		}
		v.issuers[ic.Issuer] = is
	}
	return v, nil
}

// initSelfIssued sets up the keys and rules of self-issued tokens (the
// single-issuer fields of auth).
func (v *Verifier) initSelfIssued(ctx context.Context, cfg config.Auth, deps Deps) error {
	if cfg.HMACSecret != "" {
		if len(cfg.HMACSecret) < config.MinHMACSecretBytes {
			return fmt.Errorf("auth: hmac_secret shorter than %d bytes", config.MinHMACSecretBytes)
		}
		v.hmacSecret = []byte(cfg.HMACSecret)
	}
	keys, err := LoadPublicKeys(cfg.PublicKeys)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	v.publicKeys = keys
	if cfg.JWKSURL != "" {
		if v.jwks, err = newJWKSKeys(ctx, v.newJWKS(cfg.JWKSURL, deps)); err != nil {
			return fmt.Errorf("auth: jwks: %w", err)
		}
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.algorithms),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway.Duration()),
		jwt.WithTimeFunc(deps.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return nil
}

// Ready reports whether the verifier holds the keys it was configured
// with: always without a JWKS, and after every JWKS's first successful
// fetch (discovery included) with them. Until then tokens signed by JWKS
// keys are refused.
func (v *Verifier) Ready() bool {
	v.kmu.Lock()
	defer v.kmu.Unlock()
	for _, j := range v.keepers {
		if !j.ready.Load() {
			return false
		}
	}
	return true
}

// CookieName is the session cookie this verifier reads.
func (v *Verifier) CookieName() string { return v.cookieName }

// forgetVerified drops every cached verification.
func (v *Verifier) forgetVerified() {
	if v.seen != nil {
		v.seen.Purge()
	}
}

// Verify checks token's signature and claims and returns its principal.
// Every refusal matches ErrInvalid and one of the specific reasons.
func (v *Verifier) Verify(ctx context.Context, token string) (*Principal, error) {
	if token == "" || len(token) > MaxTokenBytes {
		return nil, ErrMalformed
	}
	if v.seen == nil {
		p, err := v.verify(ctx, token)
		if err == nil && v.revoked != nil && v.revoked(p.issuer, p.Subject, p.jti) {
			return nil, ErrRevoked
		}
		return p, err
	}
	// Hash the token's bytes in place: Sum256 does not keep them, and a
	// copy would be the only allocation on a cache hit.
	key := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	now := v.now()
	if c, ok := v.seen.Peek(key); ok {
		if now.Before(c.until) {
			if v.revoked != nil && v.revoked(c.p.issuer, c.p.Subject, c.p.jti) {
				return nil, ErrRevoked
			}
			return c.p, nil
		}
		v.seen.Remove(key)
	}
	p, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if v.revoked != nil && v.revoked(p.issuer, p.Subject, p.jti) {
		return nil, ErrRevoked
	}
	// Reuse never extends validity: exactly as long as verification itself
	// would accept the token (exp plus leeway), and at most verifiedMaxAge.
	until := now.Add(verifiedMaxAge)
	if exp := p.Expires.Add(v.leeway); exp.Before(until) {
		until = exp
	}
	v.seen.Add(key, verified{p: p, until: until})
	return p, nil
}

// verify checks the signature and claims, without the cache. A token's
// iss picks the issuers entry that checks it; a token of no entry's is
// checked as self-issued, or refused without any network request when
// there are no self-issued keys.
func (v *Verifier) verify(ctx context.Context, token string) (*Principal, error) {
	if len(v.issuers) > 0 {
		iss, err := unverifiedIssuer(token)
		if err != nil {
			return nil, err
		}
		if is := v.issuers[iss]; is != nil {
			return v.verifyIssued(ctx, is, token)
		}
		if !v.selfIssued {
			return nil, fmt.Errorf("%w: %w", ErrBadIssuer, errNoIssuer)
		}
	}
	claims := jwt.MapClaims{}
	t, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return v.keyFor(ctx, t) })
	if err != nil {
		return nil, v.classify(t, claims, err, v.algorithms, v.issuer != "")
	}
	p, err := v.principal(claims, token)
	if err != nil {
		return nil, err
	}
	if err := p.setGrants(claims[v.grantsClaim], v.areas); err != nil {
		return nil, err
	}
	return p, nil
}

// verifyIssued checks a token of an issuers entry: signature and times,
// then audience (and azp), then its grant rules.
func (v *Verifier) verifyIssued(ctx context.Context, is *issuer, token string) (*Principal, error) {
	claims := jwt.MapClaims{}
	t, err := is.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) { return is.keyFor(ctx, t) })
	if err != nil {
		return nil, v.classify(t, claims, err, is.algorithms, true)
	}
	if err := is.checkAudience(claims); err != nil {
		return nil, err
	}
	p, err := v.principal(claims, token)
	if err != nil {
		return nil, err
	}
	p.issuer = is.iss
	if err := is.grant(claims, v.known, p); err != nil {
		return nil, err
	}
	return p, nil
}

// principal builds the Principal of verified claims: expiry (against
// max_token_lifetime), subject and the key of its limits.
func (v *Verifier) principal(claims jwt.MapClaims, token string) (*Principal, error) {
	p := &Principal{}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		p.Expires = exp.Time
	}
	if v.maxLifetime > 0 {
		// From iat when the token says when it was issued (checked
		// against now already), else from now: either way a token that
		// could be used longer than the cap is refused.
		from := v.now()
		if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
			from = iat.Time
		}
		if p.Expires.Sub(from) > v.maxLifetime {
			return nil, ErrLifetime
		}
	}
	p.Subject, _ = claims.GetSubject()
	p.jti, _ = claims["jti"].(string)
	if p.Subject != "" {
		h := sha256.Sum256([]byte(p.Subject))
		p.SubjectHash = hex.EncodeToString(h[:6])
		iss, _ := claims.GetIssuer()
		k := sha256.Sum256([]byte(iss + "\x00" + p.Subject))
		p.Key = hex.EncodeToString(k[:12])
	} else {
		k := sha256.Sum256([]byte(token))
		p.Key = "t" + hex.EncodeToString(k[:12])
	}
	return p, nil
}

// keyFor picks the keys that may verify t. HS* tokens are only ever
// checked against hmac_secret, never against public-key material, which is
// what makes the classic RS256→HS256 confusion attack impossible.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		if v.hmacSecret == nil {
			return nil, ErrUnknownKey
		}
		return v.hmacSecret, nil
	}
	return keySet(ctx, t, v.publicKeys, v.jwks)
}

// keySet is the keys among pem and jwks (nil when there is none) that fit
// t's algorithm.
func keySet(ctx context.Context, t *jwt.Token, pem []crypto.PublicKey, jwks *jwksKeys) (any, error) {
	var set jwt.VerificationKeySet
	for _, k := range pem {
		if fits(t.Method, k) {
			set.Keys = append(set.Keys, k)
		}
	}
	if jwks != nil {
		k, _ := jwks.key(ctx, t) // an unknown kid leaves k nil
		switch k := k.(type) {
		case nil:
		case jwt.VerificationKeySet: // no kid: every key held
			for _, kk := range k.Keys {
				if fits(t.Method, kk) {
					set.Keys = append(set.Keys, kk)
				}
			}
		default:
			if fits(t.Method, k) {
				set.Keys = append(set.Keys, k)
			}
		}
	}
	if len(set.Keys) == 0 {
		return nil, ErrUnknownKey
	}
	return set, nil
}

// classify turns the jwt library's error into one of ours; algorithms
// are the ones the token could have used, and issuerSet tells whether an
// iss was required.
func (v *Verifier) classify(t *jwt.Token, claims jwt.MapClaims, err error, algorithms []string, issuerSet bool) error {
	switch {
	case errors.Is(err, ErrUnknownKey):
		return ErrUnknownKey
	case t != nil && t.Method != nil && !slices.Contains(algorithms, t.Method.Alg()):
		return ErrBadAlgorithm
	case errors.Is(err, jwt.ErrTokenMalformed):
		// An unregistered alg ("none" without the unsafe key, "HS1024")
		// surfaces here or as unverifiable; both are algorithm refusals.
		if t != nil && t.Method == nil && t.Header["alg"] != nil {
			return ErrBadAlgorithm
		}
		return ErrMalformed
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return ErrBadAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ErrBadSignature
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ErrBadIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ErrBadAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && claims["exp"] != nil:
		// exp is present, so the missing required claim is iss or aud.
		if _, ok := claims["iss"]; !ok && issuerSet {
			return ErrBadIssuer
		}
		return ErrBadAudience
	}
	// Missing exp, claims of the wrong type (exp as a string), and so on.
	return ErrMalformed
}

// setGrants reads the grants claim: a list of tileset names, a single
// name, or "*" (alone or in the list) for every tileset; or an object
// naming each tileset ("*" too) with its scope ({"city": {"zoom": "0-14",
// "bbox": [...], "areas": ["north"], "layers": ["roads"]}, "roads": {}}).
// A missing claim grants nothing; a claim of any other shape, or a scope
// that is malformed or names an area not configured, is refused outright
// (401), never read as a wider grant.
func (p *Principal) setGrants(c any, areas area.Set) error {
	switch g := c.(type) {
	case nil:
		return nil
	case string:
		if g != "" {
			p.grant(g, nil)
		}
		return nil
	case []any:
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return ErrBadGrants
			}
			p.grant(s, nil)
		}
		return nil
	case map[string]any:
		for _, name := range slices.Sorted(maps.Keys(g)) {
			sc, err := scopeClaim(g[name])
			if err != nil {
				return err
			}
			if sc.Unconstrained() {
				p.grant(name, nil)
				continue
			}
			compiled, err := scope.Compile(sc, areas)
			if err != nil {
				return ErrBadScope
			}
			p.grant(name, &compiled)
		}
		return nil
	}
	return ErrBadGrants
}

// scopeClaim reads one tileset's scope from a grants object: an object
// with only the scope's fields, each of its type.
func scopeClaim(v any) (config.Scope, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return config.Scope{}, ErrBadGrants
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return config.Scope{}, ErrBadScope
	}
	var sc config.Scope
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return config.Scope{}, ErrBadScope
	}
	return sc, nil
}

// sessionCookie finds the session cookie in the common case, a single
// Cookie line whose first tileproxy_token cookie holds a JWT, without the
// two allocations and per-byte validation of Request.Cookie (measured in
// bench/results/history-to-2026-12-02.md). It answers only when Request.Cookie would answer the same
// (FuzzSessionCookie holds it to that, under the default GODEBUG
// httpcookiemaxnum); ok is false for anything else, which Request.Cookie
// then judges.
func sessionCookie(lines []string, cookieName string) (string, bool) {
	if len(lines) != 1 || strings.Count(lines[0], ";") > 50 {
		return "", false
	}
	line := lines[0]
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.Trim(part, " \t\r\n") // as textproto.TrimString
		name, val, _ := strings.Cut(part, "=")
		if strings.Trim(name, " \t\r\n") != cookieName {
			continue // not ours, whatever Request.Cookie makes of it
		}
		if name != cookieName || !jwtChars(val) {
			return "", false // ours, but spelled in a way left to net/http
		}
		return val, true
	}
	return "", false
}

// jwtChars reports a non-empty string of base64url characters and dots,
// all of them valid unquoted cookie-octets.
func jwtChars(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// TokenFromRequest returns the first token present, looking at the
// Authorization header, then the session cookie, then the query parameter
// (unless disabled). Whatever is found first is the one judged: a bad
// header is not rescued by a good cookie.
func (v *Verifier) TokenFromRequest(r *http.Request) (string, error) {
	if h, ok := r.Header["Authorization"]; ok {
		if len(h) != 1 {
			return "", ErrMalformed
		}
		scheme, tok, found := strings.Cut(h[0], " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			return "", ErrMalformed
		}
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return "", ErrMalformed
		}
		return tok, nil
	}
	if tok, ok := sessionCookie(r.Header["Cookie"], v.cookieName); ok {
		return tok, nil
	}
	if c, err := r.Cookie(v.cookieName); err == nil {
		if c.Value == "" {
			return "", ErrMalformed
		}
		return c.Value, nil
	}
	if v.queryParam != "" && r.URL.RawQuery != "" {
		vals, ok := r.URL.Query()[v.queryParam]
		if ok {
			if len(vals) != 1 || vals[0] == "" {
				return "", ErrMalformed
			}
			return vals[0], nil
		}
	}
	return "", ErrNoToken
}
