package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// MinHMACSecretBytes is the shortest HMAC secret accepted (RFC 7518 §3.2
// asks for a key at least as long as the hash output).
const MinHMACSecretBytes = 32

// Algorithms lists every JWS algorithm tileproxy can be told to accept.
var Algorithms = []string{
	"HS256", "HS384", "HS512",
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

var (
	// tileset names become URL segments and metric labels, so they are
	// kept to a small, dot-free alphabet ("{name}.json" is TileJSON).
	tilesetName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// S3 bucket naming rules (lower case, 3–63, no leading/trailing dot/dash).
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	roleARN    = regexp.MustCompile(`^arn:[a-z0-9-]+:(iam|sts)::[0-9A-Za-z_-]*:[A-Za-z0-9+=,.@_/:-]+$`)
	paramName  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// Validate checks every field and returns all problems at once, each
// naming its field, so `tileproxy check` can list them together.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}

	checkAddr := func(field, addr string, optional bool) {
		if addr == "" {
			if !optional {
				bad(field, "must be set (e.g. \":8080\")")
			}
			return
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(field, "%q is not host:port", addr)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Areas)) {
		if name == "" || strings.ContainsAny(name, " \t,") {
			bad("areas", "%q is not a name (no spaces or commas)", name)
		}
		if c.Areas[name] == "" {
			bad("areas."+name, "needs a GeoJSON file")
		}
	}
	checkAddr("listen", c.Listen, false)
	checkAddr("metrics_listen", c.MetricsListen, true)
	if c.MetricsListen != "" && c.MetricsListen == c.Listen {
		bad("metrics_listen", "must differ from listen")
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("public_url", "%q must be an absolute http(s) URL", c.PublicURL)
	} else if u.RawQuery != "" || u.Fragment != "" {
		bad("public_url", "must not have a query or fragment")
	}
	if c.ShutdownTimeout < 0 {
		bad("shutdown_timeout", "must not be negative")
	}
	if c.DrainDelay < 0 {
		bad("drain_delay", "must not be negative")
	}
	if c.ReadinessGrace < 0 {
		bad("readiness_grace", "must not be negative")
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}

	c.validateAuth(bad)
	c.validateLimits(bad)

	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			bad(fmt.Sprintf("cors.allowed_origins[%d]", i), "%q must be an origin like https://maps.example.com, or *", o)
		}
	}

	if c.S3.Region == "" {
		bad("s3.region", "must be set")
	}
	// Slices, not maps, so problems are listed in the same order each run.
	for _, f := range []struct{ field, ep string }{{"s3.endpoint", c.S3.Endpoint}, {"s3.sts_endpoint", c.S3.STSEndpoint}} {
		field, ep := f.field, f.ep
		if ep == "" {
			continue
		}
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(field, "%q must be an http(s) URL", ep)
		}
	}
	checkRole := func(field, arn string) {
		if arn != "" && !roleARN.MatchString(arn) {
			bad(field, "%q is not a role ARN (arn:aws:iam::123456789012:role/name)", arn)
		}
	}
	checkRole("s3.role_arn", c.S3.RoleARN)
	if d := c.S3.SessionDuration.Duration(); d < 15*time.Minute || d > 12*time.Hour {
		bad("s3.session_duration", "%s must be between 15m and 12h", d)
	}
	if len(c.S3.ExternalID) > 1224 {
		bad("s3.external_id", "longer than 1224 characters")
	}
	if c.S3.Timeout <= 0 {
		bad("s3.timeout", "must be positive")
	}
	if c.S3.ConnectTimeout <= 0 {
		bad("s3.connect_timeout", "must be positive")
	}
	if c.S3.MaxInFlight < 1 {
		bad("s3.max_in_flight", "must be at least 1")
	}

	if c.Cache.MaxBytes < 0 {
		bad("cache.max_bytes", "must not be negative")
	}
	if c.Cache.MaxObjectBytes < 0 {
		bad("cache.max_object_bytes", "must not be negative")
	}
	if c.Cache.MaxObjectBytes > c.Cache.MaxBytes {
		bad("cache.max_object_bytes", "%s is larger than cache.max_bytes %s", c.Cache.MaxObjectBytes, c.Cache.MaxBytes)
	}
	for _, f := range []struct {
		field string
		d     Duration
	}{{"cache.ttl", c.Cache.TTL}, {"cache.negative_ttl", c.Cache.NegativeTTL}, {"cache.stale_if_error", c.Cache.StaleIfError}} {
		if f.d < 0 {
			bad(f.field, "must not be negative")
		}
	}

	if w := c.Cache.Warm; len(w.Tiles) > 0 {
		if w.Concurrency < 1 || w.Concurrency > c.S3.MaxInFlight {
			bad("cache.warm.concurrency", "%d must be between 1 and s3.max_in_flight (%d)", w.Concurrency, c.S3.MaxInFlight)
		}
		if c.Cache.MaxBytes == 0 {
			bad("cache.warm", "the cache is off (max_bytes: 0): there is nothing to warm")
		}
		for i, t := range w.Tiles {
			f := fmt.Sprintf("cache.warm.tiles[%d]", i)
			if _, ok := c.Tileset(t.Tileset); !ok {
				bad(f+".tileset", "%q is not a tileset", t.Tileset)
			}
			switch {
			case (t.Zoom == "") == (t.Keys == ""):
				bad(f, "set one of zoom and keys")
			case t.Zoom != "":
				if _, _, err := t.ZoomRange(); err != nil {
					bad(f+".zoom", "%v", err)
				}
			}
		}
	}

	if len(c.Tilesets) == 0 {
		bad("tilesets", "at least one tileset is required")
	}
	seen := map[string]bool{}
	for i := range c.Tilesets {
		t := &c.Tilesets[i]
		f := fmt.Sprintf("tilesets[%d]", i)
		if t.Name != "" {
			f = fmt.Sprintf("tilesets[%d] (%s)", i, t.Name)
		}
		switch {
		case !tilesetName.MatchString(t.Name):
			bad(f+".name", "%q must be 1–64 of A-Z a-z 0-9 _ -", t.Name)
		case t.Name == "_unknown":
			bad(f+".name", "_unknown is reserved for metrics")
		}
		if seen[t.Name] {
			bad(f+".name", "duplicate tileset name %q", t.Name)
		}
		seen[t.Name] = true
		if !bucketName.MatchString(t.Bucket) || strings.Contains(t.Bucket, "..") {
			bad(f+".bucket", "%q is not a valid S3 bucket name", t.Bucket)
		}
		switch {
		case t.Archive != "" && t.Prefix != "":
			bad(f+".archive", "a tileset has an archive or a prefix, not both")
		case t.Archive != "" && (strings.HasPrefix(t.Archive, "/") || strings.HasSuffix(t.Archive, "/") || strings.Contains(t.Archive, "//") ||
			slices.Contains(strings.Split(t.Archive, "/"), "..") || strings.ContainsAny(t.Archive, "*?\\\x00") || len(t.Archive) > 1024):
			bad(f+".archive", "%q must be an object key such as maps/city.pmtiles", t.Archive)
		case strings.HasPrefix(t.Prefix, "/") || strings.Contains(t.Prefix, "//") || slices.Contains(strings.Split(t.Prefix, "/"), "..") || strings.ContainsAny(t.Prefix, "\\\x00"):
			bad(f+".prefix", "%q must be a relative key prefix such as city/", t.Prefix)
		case strings.ContainsAny(t.Prefix, "*?"):
			// The STS session policy is bucket/prefix*: a wildcard in the
			// prefix would widen it to keys of other tilesets.
			bad(f+".prefix", "%q must not contain * or ?", t.Prefix)
		case t.Archive == "" && t.Prefix != "" && !strings.HasSuffix(t.Prefix, "/"):
			// Without the slash, /tiles/a/-private/x reads a-private/x.
			bad(f+".prefix", "%q must end in / (e.g. %q), or tiles of a tileset with prefix %q would be served", t.Prefix, t.Prefix+"/", t.Prefix+"-private/")
		}
		if len(t.Prefix) > 512 {
			bad(f+".prefix", "longer than 512 bytes")
		}
		checkRole(f+".role_arn", t.RoleARN)
		if strings.ContainsAny(t.CacheControl, "\r\n") {
			bad(f+".cache_control", "must be one line")
		}
		if d := sharedCacheDirective(t.CacheControl); d != "" {
			bad(f+".cache_control", "%q lets a CDN or shared proxy serve a granted tile to anyone without a token; use private", d)
		}
		if t.Outside != "" && t.Outside != OutsideForbidden && t.Outside != OutsideEmpty {
			bad(f+".outside", "%q must be forbidden or empty", t.Outside)
		}
		if t.Missing != MissingNotFound && t.Missing != MissingEmpty {
			bad(f+".missing", "%q must be notfound or empty", t.Missing)
		}
		if !slices.Contains([]string{"png", "jpg", "jpeg", "webp", "pbf", "mvt"}, t.Format) {
			bad(f+".format", "%q must be png, jpg, jpeg, webp, pbf or mvt", t.Format)
		}
		if t.MinZoom < 0 || t.MaxZoom > 30 || t.MinZoom > t.MaxZoom {
			bad(f+".minzoom/maxzoom", "need 0 <= minzoom (%d) <= maxzoom (%d) <= 30", t.MinZoom, t.MaxZoom)
		}
		if b := t.Bounds; len(b) != 4 {
			bad(f+".bounds", "want [west, south, east, north]")
		} else if b[0] < -180 || b[2] > 180 || b[1] < -90 || b[3] > 90 || b[0] >= b[2] || b[1] >= b[3] {
			bad(f+".bounds", "%v is not a west,south,east,north box in degrees", b)
		}
	}
	c.validateOverlaps(bad)
	return errors.Join(errs...)
}

// validateOverlaps refuses tilesets of one bucket whose prefixes nest:
// the object key is prefix + path and the session policy allows
// bucket/prefix*, so a tileset whose prefix starts another's could read
// that tileset's objects. An empty prefix is the whole bucket, so it is
// allowed only for the bucket's sole tileset. Pairs are reported in
// config order, each naming both tilesets.
func (c *Config) validateOverlaps(bad func(field, format string, args ...any)) {
	for i := range c.Tilesets {
		a := &c.Tilesets[i]
		for j := i + 1; j < len(c.Tilesets); j++ {
			b := &c.Tilesets[j]
			if a.Bucket != b.Bucket {
				continue
			}
			switch {
			case a.Archive != "" && b.Archive != "":
				if a.Archive == b.Archive {
					bad(fmt.Sprintf("tilesets[%d] (%s).archive", j, b.Name), "%q is also the archive of tileset %s", b.Archive, a.Name)
				}
			case a.Archive != "" || b.Archive != "":
				// A prefix tileset whose prefix holds the archive would
				// serve the whole archive, every tile, as one object.
				arch, pre := a, b
				if b.Archive != "" {
					arch, pre = b, a
				}
				if strings.HasPrefix(arch.Archive, pre.Prefix) {
					bad(fmt.Sprintf("tilesets[%d] (%s)", j, b.Name),
						"archive %q of tileset %s lies under prefix %q of tileset %s in bucket %s: that tileset could download the whole archive",
						arch.Archive, arch.Name, pre.Prefix, pre.Name, a.Bucket)
				}
			case strings.HasPrefix(a.Prefix, b.Prefix) || strings.HasPrefix(b.Prefix, a.Prefix):
				bad(fmt.Sprintf("tilesets[%d] (%s).prefix", j, b.Name),
					"%q overlaps %q of tileset %s in bucket %s: one tileset could read the other's tiles; give each its own directory",
					b.Prefix, a.Prefix, a.Name, a.Bucket)
			}
		}
	}
}

// sharedCacheDirective returns the first Cache-Control directive that
// allows a shared cache to store an authenticated answer ("public",
// "s-maxage"), or "".
func sharedCacheDirective(cc string) string {
	for _, d := range strings.Split(cc, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch n := strings.ToLower(strings.TrimSpace(name)); n {
		case "public", "s-maxage":
			return n
		}
	}
	return ""
}

func (c *Config) validateLimits(bad func(field, format string, args ...any)) {
	l := &c.Limits
	if l.StreamsPerPrincipal < 0 {
		bad("limits.streams_per_principal", "must not be negative (0 sets no bound)")
	}
	if l.Rate < 0 || math.IsNaN(l.Rate) {
		bad("limits.rate", "must not be negative (0 turns it off)")
	}
	if l.Burst < 0 {
		bad("limits.burst", "must not be negative")
	}
	if l.MaxPrincipals < 1 || l.MaxPrincipals > 10_000_000 {
		bad("limits.max_principals", "%d must be between 1 and 10000000", l.MaxPrincipals)
	}
	c.validateExfil(bad)
	c.validateAudit(bad)
	c.validateHTTP(bad)
}

func (c *Config) validateAuth(bad func(field, format string, args ...any)) {
	a := &c.Auth
	c.validateIssuers(bad)
	if len(a.Issuers) == 0 || a.SelfIssued() {
		validateSelfIssued(a, bad)
	}
	if d := a.JWKSRefresh.Duration(); d < 10*time.Second || d > 24*time.Hour {
		bad("auth.jwks_refresh", "%s must be between 10s and 24h", d)
	}
	if a.MaxTokenLifetime < 0 {
		bad("auth.max_token_lifetime", "must not be negative (0 sets no cap)")
	}
	if a.GrantsClaim == "" {
		bad("auth.grants_claim", "must be set")
	}
	if a.Leeway < 0 || a.Leeway.Duration() > 5*time.Minute {
		bad("auth.leeway", "%s must be between 0 and 5m", a.Leeway.Duration())
	}
	if a.QueryParam != "" && !paramName.MatchString(a.QueryParam) {
		bad("auth.query_param", "%q is not a plain parameter name", a.QueryParam)
	}
	switch a.Cookie.SameSite {
	case "lax", "strict":
	case "none":
		if !a.Cookie.Secure {
			bad("auth.cookie.same_site", "none requires auth.cookie.secure: true (browsers drop it otherwise)")
		}
	default:
		bad("auth.cookie.same_site", "%q must be lax, strict or none", a.Cookie.SameSite)
	}
}

// validateSelfIssued checks the fields for self-issued tokens (keys and
// algorithms), which are required unless issuers entries stand alone.
func validateSelfIssued(a *Auth, bad func(field, format string, args ...any)) {
	hasHMAC, hasPublic := false, false
	if len(a.Algorithms) == 0 {
		bad("auth.algorithms", "at least one algorithm is required")
	}
	for i, alg := range a.Algorithms {
		switch {
		case strings.EqualFold(alg, "none"):
			bad(fmt.Sprintf("auth.algorithms[%d]", i), "\"none\" is never accepted")
		case !slices.Contains(Algorithms, alg):
			bad(fmt.Sprintf("auth.algorithms[%d]", i), "%q is not one of %s", alg, strings.Join(Algorithms, ", "))
		case strings.HasPrefix(alg, "HS"):
			hasHMAC = true
		default:
			hasPublic = true
		}
	}
	if a.HMACSecret != "" && len(a.HMACSecret) < MinHMACSecretBytes {
		bad("auth.hmac_secret", "is %d bytes; at least %d are required", len(a.HMACSecret), MinHMACSecretBytes)
	}
	if hasHMAC && a.HMACSecret == "" {
		bad("auth.hmac_secret", "must be set when an HS* algorithm is allowed")
	}
	if hasPublic && len(a.PublicKeys) == 0 && a.JWKSURL == "" {
		bad("auth.public_keys", "a PEM file or auth.jwks_url is required when an RS/PS/ES/EdDSA algorithm is allowed")
	}
	if !hasHMAC && a.HMACSecret != "" {
		bad("auth.algorithms", "hmac_secret is set but no HS* algorithm is allowed")
	}
	if a.JWKSURL != "" {
		if u, err := url.Parse(a.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("auth.jwks_url", "%q must be an http(s) URL", a.JWKSURL)
		}
	}
}

// validateIssuers checks auth.issuers: each needs an issuer, keys (by
// discovery, a JWKS URL or PEM files), an audience, asymmetric
// algorithms, and grant rules that name claims and existing tilesets.
func (c *Config) validateIssuers(bad func(field, format string, args ...any)) {
	seen := map[string]bool{}
	for i := range c.Auth.Issuers {
		is := &c.Auth.Issuers[i]
		f := fmt.Sprintf("auth.issuers[%d]", i)
		u, err := url.Parse(is.Issuer)
		switch {
		case is.Issuer == "":
			bad(f+".issuer", "is required")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad(f+".issuer", "%q must be an http(s) URL", is.Issuer)
		case seen[is.Issuer]:
			bad(f+".issuer", "%q is listed twice", is.Issuer)
		case is.Issuer == c.Auth.Issuer && c.Auth.SelfIssued():
			bad(f+".issuer", "%q is also auth.issuer, for self-issued tokens; a token's iss must select one", is.Issuer)
		}
		seen[is.Issuer] = true
		if is.JWKSURL != "" {
			if u, err := url.Parse(is.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(f+".jwks_url", "%q must be an http(s) URL", is.JWKSURL)
			}
		}
		if !is.UsesDiscovery() && is.JWKSURL == "" && len(is.PublicKeys) == 0 {
			bad(f, "needs keys: discovery (the default for https issuers), jwks_url or public_keys")
		}
		if len(is.Audience) == 0 {
			bad(f+".audience", "is required: without it any token of this issuer, for any application, would be accepted")
		}
		for j, alg := range is.Algorithms {
			if !slices.Contains(Algorithms, alg) || strings.HasPrefix(alg, "HS") || strings.EqualFold(alg, "none") {
				bad(fmt.Sprintf("%s.algorithms[%d]", f, j), "%q: an issuer's tokens are checked with RS/PS/ES/EdDSA algorithms only", alg)
			}
		}
		if len(is.Grants) == 0 {
			bad(f+".grants", "at least one rule is required, or no token of this issuer could read anything")
		}
		for j, g := range is.Grants {
			gf := fmt.Sprintf("%s.grants[%d]", f, j)
			if g.Claim == "" {
				bad(gf+".claim", "is required")
			}
			switch {
			case (g.Pattern == "") == (len(g.Values) == 0):
				bad(gf, "needs exactly one of pattern and values")
			case g.Pattern != "" && strings.Count(g.Pattern, "{tileset}") != 1:
				bad(gf+".pattern", "%q must hold {tileset} exactly once", g.Pattern)
			}
			for _, v := range slices.Sorted(maps.Keys(g.Values)) {
				for _, gv := range g.Values[v] {
					vf := fmt.Sprintf("%s.values[%q]", gf, v)
					if _, ok := c.Tileset(gv.Tileset); !ok && gv.Tileset != "*" {
						bad(vf, "names no tileset %q", gv.Tileset)
					}
					if err := gv.Scope.Validate(c.HasArea); err != nil {
						bad(vf, "%v", err)
					}
				}
			}
			if g.Scope != nil {
				if g.Pattern == "" {
					bad(gf+".scope", "goes with a pattern rule; a values rule scopes each value")
				} else if err := g.Scope.Validate(c.HasArea); err != nil {
					bad(gf+".scope", "%v", err)
				}
			}
		}
	}
}
