package config

import (
	"strings"
	"testing"
	"time"
)

const secret = "0123456789abcdef0123456789abcdef" // 32 bytes

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const good = `
public_url: "https://tiles.example.com"
auth:
  hmac_secret: "${SECRET}"
s3:
  endpoint: "${S3_ENDPOINT:-http://127.0.0.1:9000}"
  use_path_style: true
tilesets:
  - name: city
    bucket: private-tiles
    prefix: city/
    maxzoom: ${MAXZOOM}
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse([]byte(good), env(map[string]string{"SECRET": secret, "MAXZOOM": "14"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.Auth.HMACSecret != secret {
		t.Errorf("hmac_secret not expanded: got %q", cfg.Auth.HMACSecret)
	}
	if cfg.S3.Endpoint != "http://127.0.0.1:9000" {
		t.Errorf("default not used: got %q", cfg.S3.Endpoint)
	}
	ts, ok := cfg.Tileset("city")
	if !ok {
		t.Fatal("tileset city missing")
	}
	if ts.MaxZoom != 14 || ts.CacheControl != DefaultCacheControl || ts.Missing != MissingNotFound || ts.Format != "png" {
		t.Errorf("tileset defaults: got %+v", ts)
	}
	// Defaults survive where the file is silent.
	if cfg.Listen != ":8080" || cfg.Cache.MaxBytes != 256<<20 || cfg.Auth.Leeway.Duration() != 30*time.Second {
		t.Errorf("defaults lost: %+v", cfg)
	}
}

func TestSecretWithYAMLSyntaxStaysData(t *testing.T) {
	hostile := "abc: def # not a comment\n- [x] *alias &anchor 0123456789"
	cfg, err := Parse([]byte(good), env(map[string]string{"SECRET": hostile, "MAXZOOM": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.HMACSecret != hostile {
		t.Errorf("got %q, want %q", cfg.Auth.HMACSecret, hostile)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "listen: ':1'\nlisten_addr: x\n", "listen_addr"},
		{"unset env", "auth:\n  hmac_secret: ${NOPE}\n", "NOPE is not set"},
		{"bad duration", "s3:\n  timeout: soon\n", "not a duration"},
		{"bad size", "cache:\n  max_bytes: lots\n", "not a size"},
		{"not yaml", "listen: [\n", "config:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), env(nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	bad := `
listen: "nope"
public_url: "ftp://x"
log: {format: xml}
auth:
  hmac_secret: short
  algorithms: [HS256, none, XX999]
  cookie: {same_site: none, secure: false}
s3:
  session_duration: 5m
  role_arn: "not-an-arn"
cache:
  max_bytes: 1MiB
  max_object_bytes: 2MiB
tilesets:
  - name: "bad.name"
    bucket: "Bad_Bucket"
    prefix: "/abs/../x"
    missing: maybe
    format: gif
    minzoom: 5
    maxzoom: 2
    bounds: [1, 2, 3]
  - name: "bad.name"
    bucket: ok-bucket
`
	cfg, err := Parse([]byte(bad), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, field := range []string{
		"listen:", "public_url:", "log.format:", "auth.hmac_secret:", "auth.algorithms[1]:", "auth.algorithms[2]:",
		"auth.cookie.same_site:", "s3.session_duration:", "s3.role_arn:", "cache.max_object_bytes:",
		".name:", ".bucket:", ".prefix:", ".missing:", ".format:", ".minzoom/maxzoom:", ".bounds:", "duplicate tileset",
	} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("problem list lacks %q:\n%v", field, err)
		}
	}
}

func TestValidateKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"hmac ok", func(c *Config) {}, ""},
		{"rs256 without key", func(c *Config) { c.Auth.Algorithms = []string{"RS256"}; c.Auth.HMACSecret = "" }, "auth.public_keys"},
		{"rs256 with jwks", func(c *Config) {
			c.Auth.Algorithms = []string{"RS256"}
			c.Auth.HMACSecret = ""
			c.Auth.JWKSURL = "https://idp.example.com/jwks"
		}, ""},
		{"secret without HS alg", func(c *Config) { c.Auth.Algorithms = []string{"ES256"}; c.Auth.PublicKeys = []string{"k.pem"} }, "no HS* algorithm"},
		{"hs256 without secret", func(c *Config) { c.Auth.HMACSecret = "" }, "must be set when an HS*"},
		{"aws role ok", func(c *Config) { c.S3.RoleARN = "arn:aws:iam::123456789012:role/tile-reader" }, ""},
		{"minio role ok", func(c *Config) { c.S3.RoleARN = "arn:minio:iam:::role/dummy" }, ""},
		{"session too long", func(c *Config) { c.S3.SessionDuration = Duration(13 * time.Hour) }, "s3.session_duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Auth.HMACSecret = secret
			c.Tilesets = []Tileset{{Name: "a", Bucket: "tiles"}}
			c.Tilesets[0].applyDefaults()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"4096": 4096, "256MiB": 256 << 20, "1GiB": 1 << 30, "512KB": 512000, "2M": 2 << 20, "0": 0} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "MiB", "99999999999999999999TiB", "9000000000TiB"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", in)
		}
	}
	if s := ByteSize(256 << 20).String(); s != "256MiB" {
		t.Errorf("String: got %s, want 256MiB", s)
	}
}

// TestValidateIsolation holds the rules that keep one tileset from
// reading another's objects (key = prefix + path, session policy
// bucket/prefix*) and a shared cache from serving a granted tile.
func TestValidateIsolation(t *testing.T) {
	ts := func(name, bucket, prefix string) Tileset {
		t := Tileset{Name: name, Bucket: bucket, Prefix: prefix}
		t.applyDefaults()
		return t
	}
	for _, tc := range []struct {
		name     string
		tilesets []Tileset
		want     []string // substrings of the error; none = valid
	}{
		{"distinct directories", []Tileset{ts("a", "tiles", "a/"), ts("b", "tiles", "b/")}, nil},
		{"same prefix in two buckets", []Tileset{ts("a", "tiles", "x/"), ts("b", "other", "x/")}, nil},
		{"empty prefix alone in its bucket", []Tileset{ts("a", "tiles", ""), ts("b", "other", "b/")}, nil},
		{"nested directories", []Tileset{ts("a", "tiles", "a/"), ts("sub", "tiles", "a/b/")}, []string{"(sub).prefix", "tileset a"}},
		{"no trailing slash", []Tileset{ts("a", "tiles", "a")}, []string{"tilesets[0] (a).prefix", "must end in /"}},
		{"prefix starts another", []Tileset{ts("a", "tiles", "a/"), ts("ap", "tiles", "a/private/")},
			[]string{"tilesets[1] (ap).prefix", "overlaps", "tileset a"}},
		{"unslashed prefix leaks", []Tileset{ts("a", "tiles", "a"), ts("ap", "tiles", "a-private/")},
			[]string{"(a).prefix", "must end in /", "(ap).prefix", "overlaps \"a\" of tileset a"}},
		{"equal prefixes", []Tileset{ts("a", "tiles", "x/"), ts("b", "tiles", "x/")}, []string{"(b).prefix", "tileset a"}},
		{"empty prefix beside another", []Tileset{ts("all", "tiles", ""), ts("b", "tiles", "b/")}, []string{"(b).prefix", "tileset all"}},
		{"star", []Tileset{ts("a", "tiles", "a*/")}, []string{"must not contain * or ?"}},
		{"question mark", []Tileset{ts("a", "tiles", "a?/")}, []string{"must not contain * or ?"}},
		{"public", []Tileset{func() Tileset { t := ts("a", "tiles", "a/"); t.CacheControl = "public, max-age=60"; return t }()},
			[]string{"(a).cache_control", `"public"`, "CDN"}},
		{"s-maxage", []Tileset{func() Tileset { t := ts("a", "tiles", "a/"); t.CacheControl = "private, S-MaxAge=60"; return t }()},
			[]string{`"s-maxage"`}},
		{"private immutable", []Tileset{func() Tileset {
			t := ts("a", "tiles", "a/")
			t.CacheControl = "private, max-age=600, immutable"
			return t
		}()}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Auth.HMACSecret = secret
			c.Tilesets = tc.tilesets
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidateLimitsAndLifetime(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"defaults", func(c *Config) {}, ""},
		{"rate on", func(c *Config) { c.Limits.Rate = 50; c.Limits.Burst = 100 }, ""},
		{"negative streams", func(c *Config) { c.Limits.StreamsPerPrincipal = -1 }, "limits.streams_per_principal"},
		{"negative rate", func(c *Config) { c.Limits.Rate = -1 }, "limits.rate"},
		{"negative burst", func(c *Config) { c.Limits.Burst = -1 }, "limits.burst"},
		{"no principals", func(c *Config) { c.Limits.MaxPrincipals = 0 }, "limits.max_principals"},
		{"lifetime negative", func(c *Config) { c.Auth.MaxTokenLifetime = -1 }, "auth.max_token_lifetime"},
		{"jwks refresh too fast", func(c *Config) { c.Auth.JWKSRefresh = Duration(time.Second) }, "auth.jwks_refresh"},
		{"warm zoom", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "0-8"}} }, ""},
		{"warm keys", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Keys: "/etc/hot.txt"}} }, ""},
		{"warm one zoom", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "12"}} }, ""},
		{"warm both", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "0-2", Keys: "k"}} }, "cache.warm.tiles[0]: set one of zoom and keys"},
		{"warm neither", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a"}} }, "set one of zoom and keys"},
		{"warm unknown tileset", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "zz", Zoom: "1"}} }, `cache.warm.tiles[0].tileset: "zz" is not a tileset`},
		{"warm bad zoom", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "8-2"}} }, "cache.warm.tiles[0].zoom"},
		{"warm zoom past 30", func(c *Config) { c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "0-31"}} }, "cache.warm.tiles[0].zoom"},
		{"warm concurrency", func(c *Config) {
			c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "1"}}
			c.Cache.Warm.Concurrency = c.S3.MaxInFlight + 1
		}, "cache.warm.concurrency"},
		{"redis store", func(c *Config) { c.Limits.Store = "rediss://u:p@redis:6380/1"; c.Limits.OnStoreError = "deny" }, ""},
		{"unknown store", func(c *Config) { c.Limits.Store = "memcached://x" }, "limits.store"},
		{"store without a host", func(c *Config) { c.Limits.Store = "redis://" }, "limits.store"},
		{"on_store_error", func(c *Config) { c.Limits.OnStoreError = "retry" }, "limits.on_store_error"},
		{"quota", func(c *Config) { c.Limits.Quota = &Quota{Tiles: 5000, Per: Duration(24 * time.Hour)} }, ""},
		{"quota without per", func(c *Config) { c.Limits.Quota = &Quota{Tiles: 5000} }, "limits.quota.per"},
		{"negative quota", func(c *Config) { c.Limits.Quota = &Quota{Tiles: -1} }, "limits.quota.tiles"},
		{"tileset quota", func(c *Config) { c.Tilesets[0].Quota = &Quota{Tiles: 1, Per: Duration(0)} }, "tilesets[0].quota.per"},
		{"sweep", func(c *Config) { c.Limits.Sweep = &Sweep{Distinct: 100, Per: Duration(time.Hour), Action: SweepBlock} }, ""},
		{"sweep action", func(c *Config) { c.Limits.Sweep = &Sweep{Distinct: 100, Per: Duration(time.Hour), Action: "ban"} }, "limits.sweep.action"},
		{"throttle without a rate", func(c *Config) {
			c.Limits.Sweep = &Sweep{Distinct: 100, Per: Duration(time.Hour), Action: SweepThrottle}
		}, "limits.sweep.throttle_rate"},
		{"warm without a cache", func(c *Config) {
			c.Cache.Warm.Tiles = []WarmTiles{{Tileset: "a", Zoom: "1"}}
			c.Cache.MaxBytes, c.Cache.MaxObjectBytes = 0, 0
		}, "the cache is off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Auth.HMACSecret = secret
			c.Tilesets = []Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
			c.ApplyDefaults()
			tc.mod(&c)
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestValidateStableOrder: the same bad file lists its problems in the
// same order every time (maps used to shuffle some of them).
func TestValidateStableOrder(t *testing.T) {
	c := Default()
	c.S3.Endpoint, c.S3.STSEndpoint = "ftp://a", "ftp://b"
	c.Cache.TTL, c.Cache.NegativeTTL, c.Cache.StaleIfError = -1, -1, -1
	first := c.Validate().Error()
	for range 20 {
		if got := c.Validate().Error(); got != first {
			t.Fatalf("order changed:\n%s\n---\n%s", first, got)
		}
	}
	if strings.Index(first, "s3.endpoint") > strings.Index(first, "s3.sts_endpoint") ||
		strings.Index(first, "cache.ttl") > strings.Index(first, "cache.negative_ttl") {
		t.Errorf("not in field order:\n%s", first)
	}
}

// TestIssuers: auth.issuers as a user writes them (the contract's YAML
// parses: audience as a string or a list, discovery defaulting by scheme,
// a claim key with a colon), and every mistake is named.
func TestIssuers(t *testing.T) {
	const doc = `
auth:
  issuers:
    - issuer: "https://idp.example.com/realms/maps"
      audience: tileproxy
      algorithms: [RS256, ES256]
      grants:
        - claim: scope
          pattern: "tiles:{tileset}"
        - claim: realm_access.roles
          values: { analysts: [city] }
        - claim: "cognito:groups"
          values: { maps: ["*"] }
    - issuer: "http://127.0.0.1:9999/"
      public_keys: [k.pem]
      audience: [a, b]
      audience_claim: client_id
      azp: [web]
      grants: [{claim: roles, values: {x: [city]}}]
tilesets:
  - {name: city, bucket: tiles, prefix: city/}
`
	c, err := Parse([]byte(doc), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("issuers alone, without hmac_secret, must be valid: %v", err)
	}
	is := c.Auth.Issuers
	if !is[0].UsesDiscovery() || is[1].UsesDiscovery() || len(is[0].Audience) != 1 || len(is[1].Audience) != 2 ||
		is[0].Grants[2].Claim != "cognito:groups" || is[1].AudienceClaim != "client_id" || is[1].AuthorizedParties[0] != "web" {
		t.Fatalf("parsed wrongly: %+v", is)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Issuer)
		want string
	}{
		{"no issuer", func(i *Issuer) { i.Issuer = "" }, "issuers[0].issuer: is required"},
		{"not a URL", func(i *Issuer) { i.Issuer = "idp.example.com" }, "must be an http(s) URL"},
		{"no audience", func(i *Issuer) { i.Audience = nil }, "issuers[0].audience"},
		{"hs256", func(i *Issuer) { i.Algorithms = []string{"HS256"} }, "RS/PS/ES/EdDSA algorithms only"},
		{"no keys", func(i *Issuer) { i.Issuer = "http://idp.local"; i.Discovery = nil }, "needs keys"},
		{"no rules", func(i *Issuer) { i.Grants = nil }, "at least one rule"},
		{"pattern without placeholder", func(i *Issuer) { i.Grants[0].Pattern = "tiles:" }, "{tileset} exactly once"},
		{"pattern and values", func(i *Issuer) { i.Grants[0].Values = map[string][]GrantValue{"a": Grants("city")} }, "exactly one of pattern and values"},
		{"no claim", func(i *Issuer) { i.Grants[0].Claim = "" }, "grants[0].claim"},
		{"unknown tileset", func(i *Issuer) { i.Grants[1].Values = map[string][]GrantValue{"analysts": Grants("nosuch")} }, `names no tileset "nosuch"`},
		{"bad scope zoom", func(i *Issuer) {
			i.Grants[1].Values = map[string][]GrantValue{"analysts": {{Tileset: "city", Scope: Scope{Zoom: "9-3"}}}}
		}, `zoom "9-3"`},
		{"unknown area", func(i *Issuer) {
			i.Grants[1].Values = map[string][]GrantValue{"analysts": {{Tileset: "city", Scope: Scope{Areas: []string{"north"}}}}}
		}, `no area "north"`},
		{"scope on a values rule", func(i *Issuer) { i.Grants[1].Scope = &Scope{Zoom: "0-3"} }, "goes with a pattern rule"},
		{"bad bbox on a pattern", func(i *Issuer) { i.Grants[0].Scope = &Scope{BBox: []float64{0, 0, 1}} }, "four numbers"},
		{"bad jwks_url", func(i *Issuer) { i.JWKSURL = "file:///etc/keys" }, "jwks_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := Parse([]byte(doc), env(nil))
			tc.mod(&c.Auth.Issuers[0])
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c, _ = Parse([]byte(doc), env(nil))
	c.Auth.Issuers = append(c.Auth.Issuers, c.Auth.Issuers[0])
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("duplicate issuer: %v", err)
	}
	if _, err := Parse([]byte("auth: {issuers: [{issuer: x, audience: {a: 1}}]}\ntilesets: []"), env(nil)); err == nil {
		t.Fatal("an audience that is a map parsed")
	}
}

// TestArchiveTilesets: an archive or a prefix, never both; a sane key;
// and no prefix tileset whose prefix holds another tileset's archive.
func TestArchiveTilesets(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []Tileset
		want string
	}{
		{"archive", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/a.pmtiles"}}, ""},
		{"two archives, a prefix beside", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/a.pmtiles"}, {Name: "c", Bucket: "maps-bucket", Archive: "maps/c.pmtiles"}, {Name: "p", Bucket: "maps-bucket", Prefix: "tiles/"}}, ""},
		{"both", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/a.pmtiles", Prefix: "maps/"}}, "an archive or a prefix, not both"},
		{"dot-dot", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/../a.pmtiles"}}, "must be an object key"},
		{"wildcard", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/*.pmtiles"}}, "must be an object key"},
		{"a directory", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "maps/"}}, "must be an object key"},
		{"same archive twice", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "m.pmtiles"}, {Name: "c", Bucket: "maps-bucket", Archive: "m.pmtiles"}}, "also the archive of tileset a"},
		{"archive under a prefix", []Tileset{{Name: "p", Bucket: "maps-bucket", Prefix: "maps/"}, {Name: "a", Bucket: "maps-bucket", Archive: "maps/a.pmtiles"}}, "could download the whole archive"},
		{"archive under the whole bucket", []Tileset{{Name: "a", Bucket: "maps-bucket", Archive: "a.pmtiles"}, {Name: "p", Bucket: "maps-bucket"}}, "could download the whole archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Auth.HMACSecret = secret
			c.Tilesets = tc.ts
			c.ApplyDefaults()
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestStoreNameHidesThePassword: what the logs say of limits.store.
func TestStoreNameHidesThePassword(t *testing.T) {
	for store, want := range map[string]string{
		"memory":                           "memory",
		"redis://:hunter2@redis:6379/0":    "redis://:xxxxx@redis:6379/0",
		"rediss://app:hunter2@redis:6380/": "rediss://app:xxxxx@redis:6380/",
	} {
		l := Limits{Store: store}
		if got := l.StoreName(); got != want || strings.Contains(got, "hunter2") {
			t.Errorf("StoreName(%q) = %q, want %q", store, got, want)
		}
	}
}

func TestValidateAudit(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Audit
		want string
	}{
		{"off", Audit{}, ""},
		{"on", Audit{Path: "/var/log/tp/audit.jsonl", MaxBytes: 256 << 20, Keep: 10, Subjects: SubjectsHash}, ""},
		{"small", Audit{Path: "a.jsonl", MaxBytes: 1024, Keep: 10, Subjects: SubjectsHash}, "audit.max_bytes"},
		{"keep", Audit{Path: "a.jsonl", MaxBytes: 1 << 20, Subjects: SubjectsClear}, "audit.keep"},
		{"subjects", Audit{Path: "a.jsonl", MaxBytes: 1 << 20, Keep: 1, Subjects: "plain"}, "audit.subjects"},
		{"replica", Audit{Path: "a.jsonl", MaxBytes: 1 << 20, Keep: 1, Subjects: SubjectsHash, Replica: "a b"}, "audit.replica"},
		{"ship", Audit{Path: "a.jsonl", MaxBytes: 1 << 20, Keep: 1, Subjects: SubjectsHash, Ship: AuditShip{Bucket: "b", Prefix: "audit/"}}, ""},
		{"ship without a bucket", Audit{Path: "a.jsonl", MaxBytes: 1 << 20, Keep: 1, Subjects: SubjectsHash, Ship: AuditShip{Prefix: "audit/"}}, "audit.ship.bucket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Auth.HMACSecret = secret
			c.Tilesets = []Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
			c.ApplyDefaults()
			def := c.Audit
			c.Audit = tc.a
			if tc.a == (Audit{}) {
				c.Audit = def
			}
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}
