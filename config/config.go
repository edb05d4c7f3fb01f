// Package config holds tileproxy's configuration: the YAML types, their
// defaults, ${VAR} expansion and validation. Every other package takes its
// settings from here; nothing here knows about HTTP, S3 or JWT libraries.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole tileproxy configuration. The zero value is not
// usable; start from Default and overlay a file with Load or Parse.
type Config struct {
	// Listen is the main listener's address (tiles, auth, viewer, health).
	Listen string `yaml:"listen"`
	// MetricsListen is the address of the Prometheus /metrics listener;
	// empty disables it.
	MetricsListen string `yaml:"metrics_listen"`
	// PublicURL is the externally visible base URL, used in TileJSON.
	PublicURL string `yaml:"public_url"`
	// Viewer serves the built-in map viewer at "/".
	Viewer bool `yaml:"viewer"`
	// ShutdownTimeout bounds how long in-flight requests may run after
	// SIGTERM before the process exits.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// DrainDelay is how long the server keeps serving after SIGTERM with
	// /readyz answering 503, so load balancers stop sending traffic before
	// the listeners close.
	DrainDelay Duration `yaml:"drain_delay"`
	// ReadinessGrace is how long /readyz waits for a first successful
	// origin probe of every tileset before reporting ready anyway.
	ReadinessGrace Duration `yaml:"readiness_grace"`
	// Log configures structured logging.
	Log Log `yaml:"log"`
	// TLS serves the main listener over TLS (HTTP/2 by ALPN, HTTP/1.1
	// still); MetricsTLS the metrics listener.
	TLS        TLS `yaml:"tls"`
	MetricsTLS TLS `yaml:"metrics_tls"`
	// H2C serves cleartext HTTP/2 (prior knowledge, and by Upgrade: h2c)
	// beside HTTP/1.1, for balancers that speak HTTP/2 to their backends.
	H2C bool `yaml:"h2c"`
	// HTTP2 bounds HTTP/2 connections.
	HTTP2 HTTP2 `yaml:"http2"`

	Auth     Auth      `yaml:"auth"`
	Limits   Limits    `yaml:"limits"`
	CORS     CORS      `yaml:"cors"`
	S3       S3        `yaml:"s3"`
	Cache    Cache     `yaml:"cache"`
	Tilesets []Tileset `yaml:"tilesets"`
	// Areas name GeoJSON files (Polygon, MultiPolygon, Feature or
	// FeatureCollection of those, WGS 84) that grants can be scoped to;
	// a relative path is relative to the configuration file (Dir).
	Areas map[string]string `yaml:"areas"`
	// Revocation is the file of revoked subjects and token IDs.
	Revocation Revocation `yaml:"revocation"`
	// Audit is the audit trail; off without a path.
	Audit Audit `yaml:"audit"`
	// Dir is the directory of the file the configuration was loaded
	// from ("" for Parse): where relative area paths start.
	Dir string `yaml:"-"`
}

// HasArea reports whether an area of that name is configured.
func (c *Config) HasArea(name string) bool { _, ok := c.Areas[name]; return ok }

// AreaPath is where area name's file is.
func (c *Config) AreaPath(name string) string { return c.rel(c.Areas[name]) }

// RevocationPath is revocation.file, relative to Dir; "" when unset.
func (c *Config) RevocationPath() string { return c.rel(c.Revocation.File) }

// rel resolves p against Dir.
func (c *Config) rel(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Dir == "" {
		return p
	}
	return filepath.Join(c.Dir, p)
}

// Log configures log/slog output.
type Log struct {
	// Format is "text" or "json".
	Format string `yaml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `yaml:"level"`
	// Access writes one line per request at info level. Turn it off only
	// when a load balancer already logs requests and the rate is high.
	Access bool `yaml:"access"`
}

// Auth configures JWT verification and where tokens are read from.
type Auth struct {
	// HMACSecret verifies HS256/384/512 tokens; at least 32 bytes.
	HMACSecret string `yaml:"hmac_secret"`
	// PublicKeys are PEM files (RSA, ECDSA or Ed25519 public keys).
	PublicKeys []string `yaml:"public_keys"`
	// JWKSURL is fetched at start and refreshed in the background.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSRefresh is the background refresh interval of the JWKS: a key
	// withdrawn there stops verifying new tokens within one interval.
	JWKSRefresh Duration `yaml:"jwks_refresh"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `yaml:"issuer"`
	// Audience, when set, must be among the token's aud.
	Audience string `yaml:"audience"`
	// GrantsClaim names the claim listing the tilesets a token may read.
	GrantsClaim string `yaml:"grants_claim"`
	// Algorithms are the only JWS algorithms accepted.
	Algorithms []string `yaml:"algorithms"`
	// Leeway is the clock skew allowed on exp, nbf and iat.
	Leeway Duration `yaml:"leeway"`
	// MaxTokenLifetime, when positive, refuses tokens whose lifetime
	// (exp - iat, or exp - now without iat) is longer; 0 sets no cap.
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
	// QueryParam is the query parameter a token may come in; "" disables it.
	QueryParam string `yaml:"query_param"`
	// Cookie configures the session cookie set by POST /auth/session.
	Cookie Cookie `yaml:"cookie"`
	// Issuers are identity providers whose tokens are accepted, each
	// with its own keys, audience and grant rules. A token's iss selects
	// its entry; a token whose iss names none is checked against the
	// fields above (self-issued tokens) when they hold any key, and
	// refused otherwise.
	Issuers []Issuer `yaml:"issuers"`
}

// Issuer is one OpenID provider (Auth0, Cognito, Keycloak, Entra ID,
// Okta, Ory, ...).
type Issuer struct {
	// Issuer must equal the token's iss exactly.
	Issuer string `yaml:"issuer"`
	// Discovery reads {issuer}/.well-known/openid-configuration for the
	// jwks_uri. Unset means true for https issuers and false otherwise.
	Discovery *bool `yaml:"discovery"`
	// JWKSURL overrides the discovered jwks_uri.
	JWKSURL string `yaml:"jwks_url"`
	// JWKSHosts are hosts besides the issuer's own that a discovered
	// jwks_uri may name (Cognito and Entra ID serve keys from the
	// issuer's host; some set-ups do not).
	JWKSHosts []string `yaml:"jwks_hosts"`
	// PublicKeys are PEM files of the issuer's keys, for development
	// and for providers without a JWKS.
	PublicKeys []string `yaml:"public_keys"`
	// Audience lists accepted audiences (a string or a list); one must
	// be among the token's aud, or equal the AudienceClaim's value.
	Audience StringList `yaml:"audience"`
	// AudienceClaim, when set, is the claim the audience is matched
	// against instead of aud (Cognito access tokens: client_id).
	AudienceClaim string `yaml:"audience_claim"`
	// AuthorizedParties, when set, requires the token's azp to be one of
	// them.
	AuthorizedParties []string `yaml:"azp"`
	// Algorithms accepted from this issuer; RS256 and ES256 when empty.
	// HS* is never accepted from an issuer: its key would be shared.
	Algorithms []string `yaml:"algorithms"`
	// Grants are the rules that turn claims into tilesets; a token gets
	// the union of what every rule grants.
	Grants []GrantRule `yaml:"grants"`
}

// DefaultIssuerAlgorithms are what an issuer entry accepts when it names
// none.
var DefaultIssuerAlgorithms = []string{"RS256", "ES256"}

// UsesDiscovery reports whether the issuer's keys are found through
// OpenID discovery.
func (i *Issuer) UsesDiscovery() bool {
	if i.Discovery != nil {
		return *i.Discovery
	}
	return strings.HasPrefix(i.Issuer, "https://") && i.JWKSURL == "" && len(i.PublicKeys) == 0
}

// GrantRule grants tilesets from one claim. Claim is a dotted path into
// the token's claims (realm_access.roles); a key that itself contains dots
// or colons (https://example.com/tiles, cognito:groups) is matched whole.
// A string claim is read as space-separated values (OAuth's scope), an
// array as its string elements.
type GrantRule struct {
	Claim string `yaml:"claim"`
	// Pattern grants the tileset named by the part of a value matching
	// {tileset} ("tiles:{tileset}"), when such a tileset exists.
	Pattern string `yaml:"pattern"`
	// Values maps a claim value to what it grants: tileset names ("*"
	// grants every tileset) or scoped grants.
	Values map[string][]GrantValue `yaml:"values"`
	// Scope narrows every tileset a pattern rule grants.
	Scope *Scope `yaml:"scope"`
}

// SelfIssued reports whether the fields for self-issued tokens hold any
// key: with none, only the issuers entries verify tokens.
func (a *Auth) SelfIssued() bool {
	return a.HMACSecret != "" || len(a.PublicKeys) > 0 || a.JWKSURL != ""
}

// Limits bound what one principal (one verified token's subject) can take
// from everyone else.
type Limits struct {
	// StreamsPerPrincipal bounds one principal's concurrent streams of
	// objects larger than cache.max_object_bytes (or of unknown size):
	// the downloads a slow reader can hold open. 0 sets no bound.
	StreamsPerPrincipal int `yaml:"streams_per_principal"`
	// Rate is the request rate per principal in requests per second,
	// enforced by a token bucket; 0 turns it off.
	Rate float64 `yaml:"rate"`
	// Burst is the bucket's size; 0 means one second's worth of Rate.
	Burst int `yaml:"burst"`
	// MaxPrincipals bounds how many principals' buckets are tracked; the
	// least recently seen is forgotten first.
	MaxPrincipals int `yaml:"max_principals"`
	// Store holds the counters, quotas and revocations replicas share:
	// "memory" (this process alone) or a redis:// or rediss:// URL.
	Store string `yaml:"store"`
	// OnStoreError is allow (per-replica limits while the store is
	// unreachable) or deny (503).
	OnStoreError string `yaml:"on_store_error"`
	// Quota bounds the tiles each principal is answered per tileset per
	// window; a tileset's own quota overrides it.
	Quota *Quota `yaml:"quota"`
	// Sweep flags principals that ask for many distinct tiles.
	Sweep *Sweep `yaml:"sweep"`
}

// Cookie configures the session cookie: __Host-tileproxy_token when
// Secure, tileproxy_token otherwise.
type Cookie struct {
	// Secure marks the cookie Secure (HTTPS only). Turn off only for
	// plain-http development.
	Secure bool `yaml:"secure"`
	// SameSite is "lax", "strict" or "none" ("none" requires secure).
	SameSite string `yaml:"same_site"`
}

// CORS configures cross-origin access for map pages on other origins.
type CORS struct {
	// AllowedOrigins are exact origins ("https://maps.example.com"), or "*".
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// S3 configures the origin object store.
type S3 struct {
	Region string `yaml:"region"`
	// Endpoint overrides the S3 endpoint (MinIO and other S3-compatible stores).
	Endpoint string `yaml:"endpoint"`
	// STSEndpoint overrides the STS endpoint (MinIO serves STS on its S3 port).
	STSEndpoint string `yaml:"sts_endpoint"`
	// UsePathStyle addresses buckets as endpoint/bucket/key.
	UsePathStyle bool `yaml:"use_path_style"`
	// RoleARN, when set, is assumed for every tileset that has no role of its own.
	RoleARN string `yaml:"role_arn"`
	// ExternalID is passed to AssumeRole when set.
	ExternalID string `yaml:"external_id"`
	// SessionDuration is the lifetime of assumed-role credentials (15m–12h).
	SessionDuration Duration `yaml:"session_duration"`
	// Timeout bounds one origin request up to its response headers.
	Timeout Duration `yaml:"timeout"`
	// ConnectTimeout bounds establishing a TCP connection to the origin.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxInFlight bounds concurrent origin requests; past it requests get
	// 503 with Retry-After (or a stale copy) instead of queueing.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Cache configures the in-memory tile cache.
type Cache struct {
	// MaxBytes bounds the memory held by cached tiles.
	MaxBytes ByteSize `yaml:"max_bytes"`
	// MaxObjectBytes is the largest object cached; larger ones stream through.
	MaxObjectBytes ByteSize `yaml:"max_object_bytes"`
	// TTL is how long an entry is served without asking the origin.
	TTL Duration `yaml:"ttl"`
	// NegativeTTL is how long a missing object is remembered.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// StaleIfError is how long past TTL an entry may be served when the origin fails.
	StaleIfError Duration `yaml:"stale_if_error"`
	// Warm pre-fills the cache when tileproxy serve starts.
	Warm Warm `yaml:"warm"`
}

// Warm pre-fills the cache at start, so that a replica that restarts
// does not send its first users to S3 for every tile. /readyz waits for
// it, up to readiness_grace.
type Warm struct {
	// Concurrency bounds the origin fetches the warm makes at once;
	// at most s3.max_in_flight, so that requests still get slots.
	Concurrency int `yaml:"concurrency"`
	// Tiles is what to fetch, in order.
	Tiles []WarmTiles `yaml:"tiles"`
}

// WarmTiles is one tileset's share of the warm: every tile of a zoom
// range within the tileset's bounds, or the tiles a file lists.
type WarmTiles struct {
	Tileset string `yaml:"tileset"`
	// Zoom is a range "MIN-MAX" (or one zoom, "N"), clipped to the
	// tileset's zooms.
	Zoom string `yaml:"zoom"`
	// Keys is a file of tile paths as in the URL after the tileset
	// ("14/8190/5447.pbf"), one per line; blank lines and lines starting
	// with # are skipped.
	Keys string `yaml:"keys"`
}

// MaxWarmTiles bounds what one warm plans: a zoom range beyond it is a
// mistake (z0-14 of the world is 358 million tiles), not a plan.
const MaxWarmTiles = 10_000_000

// ZoomRange parses Zoom.
func (w WarmTiles) ZoomRange() (lo, hi int, err error) { return parseZoomRange(w.Zoom, 30) }

// Tileset maps a public tileset name onto a bucket prefix.
type Tileset struct {
	// Name is the URL segment: /tiles/{name}/...
	Name   string `yaml:"name"`
	Bucket string `yaml:"bucket"`
	// Prefix is prepended to the request path to form the object key.
	Prefix string `yaml:"prefix"`
	// Archive names one PMTiles archive (an object key) that holds the
	// whole tileset, instead of a Prefix.
	Archive string `yaml:"archive"`
	// Quota overrides limits.quota for this tileset.
	Quota *Quota `yaml:"quota"`
	// RoleARN overrides s3.role_arn for this tileset.
	RoleARN string `yaml:"role_arn"`
	// CacheControl is sent on every tile of this tileset.
	CacheControl string `yaml:"cache_control"`
	// Missing is "notfound" (404) or "empty" (204) for absent objects.
	Missing string `yaml:"missing"`
	// Outside is "forbidden" (403, error="outside_grant"; the default) or
	// "empty" (204) for a tile outside a principal's scoped grant.
	Outside string `yaml:"outside"`
	// Format is the tile extension used in TileJSON: png, jpg, webp, pbf,
	// mvt. An archive tileset takes its format, zoom range, bounds and
	// attribution from the archive.
	Format      string    `yaml:"format"`
	MinZoom     int       `yaml:"minzoom"`
	MaxZoom     int       `yaml:"maxzoom"`
	Bounds      []float64 `yaml:"bounds"`
	Attribution string    `yaml:"attribution"`
}

// Answers for a tile outside a scoped grant (Tileset.Outside).
const (
	OutsideForbidden = "forbidden"
	OutsideEmpty     = "empty"
)

// Missing-object behaviours for Tileset.Missing.
const (
	MissingNotFound = "notfound"
	MissingEmpty    = "empty"
)

// DefaultCacheControl is used for tilesets that set no cache_control.
const DefaultCacheControl = "private, max-age=3600"

// Default returns the configuration that a file overlays. Fields a file
// leaves out keep these values.
func Default() Config {
	return Config{
		Listen:          ":8080",
		MetricsListen:   ":9090",
		PublicURL:       "http://localhost:8080",
		ShutdownTimeout: Duration(20 * time.Second),
		DrainDelay:      Duration(5 * time.Second),
		ReadinessGrace:  Duration(30 * time.Second),
		Log:             Log{Format: "text", Level: "info", Access: true},
		HTTP2:           HTTP2{MaxConcurrentStreams: 250},
		Auth: Auth{
			JWKSRefresh: Duration(5 * time.Minute),
			GrantsClaim: "tilesets",
			Algorithms:  []string{"HS256"},
			Leeway:      Duration(30 * time.Second),
			QueryParam:  "access_token",
			Cookie:      Cookie{Secure: true, SameSite: "lax"},
		},
		Limits: Limits{StreamsPerPrincipal: 4, MaxPrincipals: 10_000, Store: StoreMemory, OnStoreError: OnStoreErrorAllow},
		Audit:  Audit{MaxBytes: 256 << 20, Keep: 10, Subjects: SubjectsHash},
		S3: S3{
			Region:          "us-east-1",
			SessionDuration: Duration(time.Hour),
			Timeout:         Duration(10 * time.Second),
			ConnectTimeout:  Duration(3 * time.Second),
			MaxInFlight:     256,
		},
		Cache: Cache{
			MaxBytes:       256 << 20,
			MaxObjectBytes: 4 << 20,
			Warm:           Warm{Concurrency: 8},
			TTL:            Duration(5 * time.Minute),
			NegativeTTL:    Duration(30 * time.Second),
			StaleIfError:   Duration(time.Hour),
		},
	}
}

// ApplyDefaults fills what each tileset leaves out (cache_control,
// missing, format, zoom range, bounds). Parse calls it; a Config built in
// code should call it before Validate.
func (c *Config) ApplyDefaults() {
	for i := range c.Tilesets {
		c.Tilesets[i].applyDefaults()
	}
}

func (t *Tileset) applyDefaults() {
	if t.CacheControl == "" {
		t.CacheControl = DefaultCacheControl
	}
	if t.Missing == "" {
		t.Missing = MissingNotFound
	}
	if t.Format == "" {
		t.Format = "png"
	}
	if t.MaxZoom == 0 && t.MinZoom == 0 {
		t.MaxZoom = 22
	}
	if t.Bounds == nil {
		t.Bounds = []float64{-180, -85.0511, 180, 85.0511}
	}
}

// Load reads a YAML file, expands ${VAR} from the environment and returns
// the result on top of Default. It does not call Validate.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err == nil {
		cfg.Dir = filepath.Dir(path)
	}
	return cfg, err
}

// Parse is Load for bytes already read, with lookup standing in for the
// environment (os.LookupEnv in production, a map in tests).
func Parse(data []byte, lookup func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg := Default()
	if root.Kind == 0 { // empty document
		return &cfg, nil
	}
	// Expand inside scalar values, after YAML parsing, so a secret that
	// contains ':' or '#' cannot change the document's structure.
	var errs []error
	expandNode(&root, lookup, &errs)
	if len(errs) > 0 {
		return nil, fmt.Errorf("config: %w", errors.Join(errs...))
	}
	expanded, err := yaml.Marshal(&root)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true) // a misspelt key is an error, not a silent default
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.ApplyDefaults()
	return &cfg, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandNode replaces ${VAR} and ${VAR:-default} in every scalar. An unset
// variable without a default is reported, since silently reading "" for a
// secret is how a proxy ends up with no key at all.
func expandNode(n *yaml.Node, lookup func(string) (string, bool), errs *[]error) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := lookup(m[1]); ok && v != "" {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			*errs = append(*errs, fmt.Errorf("line %d: environment variable %s is not set", n.Line, m[1]))
			return ""
		})
		// Let the expanded value resolve afresh, so ${MAXZOOM} can fill an
		// int field; plain scalars still decode verbatim into strings. Only
		// a value YAML would read as null is pinned to a string, so an
		// expansion never silently empties a field.
		n.Tag, n.Style = "", 0
		switch n.Value {
		case "", "~", "null", "Null", "NULL":
			n.Tag = "!!str"
		}
	}
	for _, c := range n.Content {
		expandNode(c, lookup, errs)
	}
}

// Tileset returns the tileset named name, if configured.
func (c *Config) Tileset(name string) (*Tileset, bool) {
	for i := range c.Tilesets {
		if c.Tilesets[i].Name == name {
			return &c.Tilesets[i], true
		}
	}
	return nil, false
}

// RoleARN returns the role assumed for tileset t: its own, else the global one.
func (c *Config) RoleARN(t *Tileset) string {
	if t.RoleARN != "" {
		return t.RoleARN
	}
	return c.S3.RoleARN
}
