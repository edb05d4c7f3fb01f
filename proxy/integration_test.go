package proxy_test

import (
	"bufio"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/golang-jwt/jwt/v5"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

const secret = "integration-secret-0123456789abcdef"

// recordingClient records every request the SDK sends to S3.
type recordingClient struct {
	mu   sync.Mutex // protects reqs
	reqs []http.Header
	c    *http.Client
}

func (r *recordingClient) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Header.Clone())
	r.mu.Unlock()
	return r.c.Do(req)
}

// stackOpts adjusts newStack: a cache, and a wrapper around the real S3
// fetcher (to count or record what reaches MinIO).
type stackOpts struct {
	cache   *config.Cache
	wrap    func(origin.Fetcher) origin.Fetcher
	timeout time.Duration // s3.timeout; 5 s when 0
	// now is the cache's clock (TTLs, stale windows); time.Now when nil.
	now func() time.Time
}

type stack struct {
	cache *cache.Cache
	srv   *httptest.Server
	s3    *recordingClient
	keys  map[string]crypto.Signer
	logs  *testenv.SyncBuffer
}

func loadPrivate(t *testing.T, name string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "keys", name+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

// newStack runs the whole proxy against MinIO at endpoint, with HMAC, PEM
// and JWKS keys all configured.
func newStack(t *testing.T, endpoint, ak, sk string, tilesets []config.Tileset, opts ...stackOpts) *stack {
	t.Helper()
	st := &stack{keys: map[string]crypto.Signer{}, logs: &testenv.SyncBuffer{}}
	for _, n := range []string{"rsa", "ec", "ed25519"} {
		st.keys[n] = loadPrivate(t, n)
	}
	// A JWKS with the same keys under kids, served locally.
	set := jwkset.NewMemoryStorage()
	for kid, k := range st.keys {
		jwk, err := jwkset.NewJWKFromKey(k, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "jwks-" + kid}})
		if err != nil {
			t.Fatal(err)
		}
		set.KeyWrite(t.Context(), jwk)
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := set.JSONPublic(r.Context())
		w.Write(raw)
	}))
	t.Cleanup(jwks.Close)

	cfg := config.Default()
	cfg.Auth.HMACSecret = secret
	cfg.Auth.Algorithms = []string{"HS256", "RS256", "ES256", "EdDSA"}
	cfg.Auth.PublicKeys = []string{"../testdata/keys/rsa.pub.pem", "../testdata/keys/ec.pub.pem", "../testdata/keys/ed25519.pub.pem"}
	cfg.Auth.JWKSURL = jwks.URL
	cfg.S3.Endpoint = endpoint
	cfg.S3.UsePathStyle = true
	cfg.S3.Timeout = config.Duration(5 * time.Second)
	for _, opt := range opts {
		if opt.timeout > 0 {
			cfg.S3.Timeout = config.Duration(opt.timeout)
		}
	}
	cfg.Tilesets = tilesets
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// The JWKS is fetched in the background; the tests sign with its keys.
	for i := 0; !v.Ready(); i++ {
		if i == 1000 {
			t.Fatal("the JWKS was never fetched")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.s3 = &recordingClient{c: &http.Client{}}
	o, err := origin.New(t.Context(), &cfg, origin.Deps{Logger: log, HTTPClient: st.s3,
		Credentials: credentials.NewStaticCredentialsProvider(ak, sk, "")})
	if err != nil {
		t.Fatal(err)
	}
	var f origin.Fetcher = o
	for _, opt := range opts {
		if opt.wrap != nil {
			f = opt.wrap(f)
		}
		if opt.cache != nil {
			if st.cache, err = cache.New(cache.FromConfig(*opt.cache, 10*time.Second), cache.Deps{Now: opt.now}); err != nil {
				t.Fatal(err)
			}
		}
	}
	p, err := proxy.New(&cfg, proxy.Deps{Verifier: v, Fetcher: f, Cache: st.cache, Logger: log,
		AccessLog: accesslog.New(accesslog.Text, st.logs)})
	if err != nil {
		t.Fatal(err)
	}
	st.srv = httptest.NewServer(p)
	t.Cleanup(st.srv.Close)
	return st
}

func hmacToken(t *testing.T, ttl time.Duration, tilesets ...string) string {
	t.Helper()
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: tilesets, TTL: ttl, Subject: "it"})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func signed(t *testing.T, m jwt.SigningMethod, key any, kid string, tilesets ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "tilesets": tilesets})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// raw sends one request line byte for byte and returns the status code.
func raw(t *testing.T, srv *httptest.Server, target, authz string) int {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, authz)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	return do(t, "GET", url, hdr)
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := try(method, url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// try is do for goroutines other than the test's, which must not call
// t.Fatal: it returns the error instead.
func try(method, url string, hdr map[string]string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func seed(t *testing.T, env *testenv.S3, bucket string) map[string][]byte {
	t.Helper()
	objs := map[string]testenv.Object{}
	bodies := map[string][]byte{}
	for _, k := range []string{"raster/0/0/0.png", "raster/1/1/0.png", "vector/0/0/0.pbf"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "tiles", k))
		if err != nil {
			t.Fatal(err)
		}
		o := testenv.Object{Body: b, ContentType: "image/png"}
		if strings.HasSuffix(k, ".pbf") {
			o = testenv.Object{Body: b, ContentType: "application/vnd.mapbox-vector-tile", ContentEncoding: "gzip"}
		}
		objs[k] = o
		bodies[k] = b
	}
	// Stored with no content type: the proxy falls back to the extension.
	objs["raster/2/0/0.png"] = testenv.Object{Body: bodies["raster/0/0/0.png"]}
	// Stored as a document by whoever could write under the prefix.
	objs["raster/evil.png"] = testenv.Object{Body: []byte("<script>alert(document.cookie)</script>"), ContentType: "text/html"}
	objs["raster/evil.svg"] = testenv.Object{Body: []byte("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"), ContentType: "image/svg+xml"}
	env.Put(t, bucket, objs)
	return bodies
}

func TestProxyOnMinIO(t *testing.T) {
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	bodies := seed(t, env, bucket)
	st := newStack(t, env.Endpoint, env.AccessKey, env.SecretKey, []config.Tileset{
		{Name: "city", Bucket: bucket, Prefix: "raster/", CacheControl: "private, max-age=86400"},
		{Name: "roads", Bucket: bucket, Prefix: "vector/", Format: "pbf"},
		{Name: "holes", Bucket: bucket, Prefix: "holes/", Missing: config.MissingEmpty},
	})
	base := st.srv.URL + "/tiles/"
	city := hmacToken(t, time.Hour, "city")
	bearer := map[string]string{"Authorization": "Bearer " + city}

	t.Run("200 with every header", func(t *testing.T) {
		resp, body := get(t, base+"city/0/0/0.png", bearer)
		if resp.StatusCode != 200 || string(body) != string(bodies["raster/0/0/0.png"]) {
			t.Fatalf("got %d, %d bytes", resp.StatusCode, len(body))
		}
		h := resp.Header
		for k, want := range map[string]string{
			"Content-Type": "image/png", "Content-Length": fmt.Sprint(len(body)),
			"Cache-Control": "private, max-age=86400", "Accept-Ranges": "bytes", "X-Cache": "MISS",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: got %q, want %q", k, got, want)
			}
		}
		if !strings.HasPrefix(h.Get("Etag"), `"`) || h.Get("Last-Modified") == "" {
			t.Errorf("ETag %q Last-Modified %q", h.Get("Etag"), h.Get("Last-Modified"))
		}
		if _, err := http.ParseTime(h.Get("Last-Modified")); err != nil {
			t.Errorf("Last-Modified: %v", err)
		}
	})
	t.Run("type by extension and gzip passthrough", func(t *testing.T) {
		resp, _ := get(t, base+"city/2/0/0.png", bearer)
		if resp.Header.Get("Content-Type") != "image/png" {
			t.Errorf("Content-Type: %q", resp.Header.Get("Content-Type"))
		}
		req, _ := http.NewRequest("GET", base+"roads/0/0/0.pbf", nil)
		req.Header.Set("Authorization", "Bearer "+hmacToken(t, time.Hour, "roads"))
		req.Header.Set("Accept-Encoding", "gzip")
		resp2, err := http.DefaultTransport.RoundTrip(req) // no transparent gunzip
		if err != nil {
			t.Fatal(err)
		}
		defer resp2.Body.Close()
		b, _ := io.ReadAll(resp2.Body)
		if resp2.Header.Get("Content-Encoding") != "gzip" || string(b) != string(bodies["vector/0/0/0.pbf"]) {
			t.Errorf("pbf: %v, %d bytes", resp2.Header, len(b))
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp, body := do(t, "HEAD", base+"city/0/0/0.png", bearer)
		if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != fmt.Sprint(len(bodies["raster/0/0/0.png"])) || resp.Header.Get("Etag") == "" {
			t.Errorf("HEAD: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("304 and 206", func(t *testing.T) {
		first, _ := get(t, base+"city/0/0/0.png", bearer)
		resp, body := get(t, base+"city/0/0/0.png", map[string]string{"Authorization": bearer["Authorization"], "If-None-Match": first.Header.Get("Etag")})
		if resp.StatusCode != 304 || len(body) != 0 {
			t.Errorf("If-None-Match: got %d", resp.StatusCode)
		}
		resp, body = get(t, base+"city/0/0/0.png", map[string]string{"Authorization": bearer["Authorization"], "Range": "bytes=0-7"})
		if resp.StatusCode != 206 || string(body) != "\x89PNG\r\n\x1a\n" {
			t.Errorf("Range: got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("status codes", func(t *testing.T) {
		expired, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"city"}, TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
		wrongKey, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte("another-secret-another-secret-xxxx"), Tilesets: []string{"city"}, TTL: time.Hour})
		enc := base64.RawURLEncoding.EncodeToString
		none := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d,"tilesets":"*"}`, time.Now().Add(time.Hour).Unix()))) + "."
		hs384 := signed(t, jwt.SigningMethodHS384, []byte(secret), "", "city")
		star := hmacToken(t, time.Hour, "*")
		for _, tc := range []struct {
			name, path, tok string
			want            int
		}{
			{"no token", "city/0/0/0.png", "", 401},
			{"expired", "city/0/0/0.png", expired, 401},
			{"bad signature", "city/0/0/0.png", wrongKey, 401},
			{"wrong alg", "city/0/0/0.png", hs384, 401},
			{"alg none", "city/0/0/0.png", none, 401},
			{"not granted", "roads/0/0/0.pbf", city, 403},
			{"unknown tileset", "nope/0/0/0.png", star, 404},
			{"missing object", "city/9/9/9.png", city, 404},
			{"missing empty", "holes/9/9/9.png", star, 204},
		} {
			t.Run(tc.name, func(t *testing.T) {
				hdr := map[string]string{}
				if tc.tok != "" {
					hdr["Authorization"] = "Bearer " + tc.tok
				}
				resp, body := get(t, base+tc.path, hdr)
				if resp.StatusCode != tc.want {
					t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tc.want)
				}
				if strings.Contains(string(body), bucket) || strings.Contains(string(body), "raster/") {
					t.Errorf("body leaks the bucket or key: %q", body)
				}
			})
		}
	})
	t.Run("400 for traversal forms on the wire", func(t *testing.T) {
		for _, target := range []string{
			"/tiles/city/../roads/0/0/0.pbf", "/tiles/city/./0/0/0.png", "/tiles/city//0/0/0.png",
			"/tiles/city/..\\roads/0.pbf", "/tiles/city/%2e%2e/roads/0/0/0.pbf", "/tiles/city/%2E%2e%2Froads/0.pbf",
			"/tiles/city/%252e%252e/x.png", "/tiles/city/0%00.png", "/tiles/city/%c0%ae%c0%ae/x.png",
			"/tiles/city/" + strings.Repeat("a", 1100) + ".png", "/tiles/../tiles/city/0/0/0.png",
		} {
			if got := raw(t, st.srv, target, city); got != 400 {
				t.Errorf("%s: got %d, want 400", target, got)
			}
		}
	})
	t.Run("stored documents go out as octet-stream", func(t *testing.T) {
		for _, key := range []string{"evil.png", "evil.svg"} {
			resp, body := get(t, base+"city/"+key, bearer)
			if resp.StatusCode != 200 || !strings.Contains(string(body), "<script>") {
				t.Fatalf("%s: %d %q", key, resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: Content-Type %q, nosniff %q", key, ct, resp.Header.Get("X-Content-Type-Options"))
			}
		}
	})
	t.Run("token sources", func(t *testing.T) {
		if resp, _ := get(t, base+"city/0/0/0.png", bearer); resp.StatusCode != 200 {
			t.Errorf("header: %d", resp.StatusCode)
		}
		if resp, _ := get(t, base+"city/0/0/0.png", map[string]string{"Cookie": auth.SecureCookieName + "=" + city}); resp.StatusCode != 200 {
			t.Errorf("cookie: %d", resp.StatusCode)
		}
		if resp, _ := get(t, base+"city/0/0/0.png?access_token="+city, nil); resp.StatusCode != 200 {
			t.Errorf("query: %d", resp.StatusCode)
		}
		// The session endpoint sets the cookie a browser then sends.
		resp, _ := do(t, "POST", st.srv.URL+"/auth/session", bearer)
		if resp.StatusCode != 204 || len(resp.Cookies()) != 1 || !resp.Cookies()[0].HttpOnly {
			t.Fatalf("session: %d %v", resp.StatusCode, resp.Cookies())
		}
		if resp, _ := get(t, base+"city/0/0/0.png", map[string]string{"Cookie": resp.Cookies()[0].String()}); resp.StatusCode != 200 {
			t.Errorf("session cookie: %d", resp.StatusCode)
		}
	})
	t.Run("asymmetric keys via PEM and JWKS", func(t *testing.T) {
		for _, tc := range []struct {
			m   jwt.SigningMethod
			key string
		}{{jwt.SigningMethodRS256, "rsa"}, {jwt.SigningMethodES256, "ec"}, {jwt.SigningMethodEdDSA, "ed25519"}} {
			for _, kid := range []string{"", "jwks-" + tc.key} {
				tok := signed(t, tc.m, st.keys[tc.key], kid, "city")
				if resp, _ := get(t, base+"city/0/0/0.png", map[string]string{"Authorization": "Bearer " + tok}); resp.StatusCode != 200 {
					t.Errorf("%s kid=%q: got %d", tc.m.Alg(), kid, resp.StatusCode)
				}
			}
		}
	})
	t.Run("client credentials never reach S3", func(t *testing.T) {
		st.s3.mu.Lock()
		defer st.s3.mu.Unlock()
		if len(st.s3.reqs) == 0 {
			t.Fatal("no S3 requests recorded")
		}
		for _, h := range st.s3.reqs {
			if h.Get("Cookie") != "" || !strings.HasPrefix(h.Get("Authorization"), "AWS4-HMAC-SHA256") {
				t.Fatalf("S3 request carried client credentials: %v", h)
			}
		}
	})
	t.Run("logs hold no token or S3 secret", func(t *testing.T) {
		logs := st.logs.String()
		for _, s := range []string{city, env.SecretKey, secret} {
			if strings.Contains(logs, s) {
				t.Fatalf("logs contain a secret")
			}
		}
	})
}

func TestProxyWhenMinIOStops(t *testing.T) {
	p := testenv.StartMinIO(t)
	env := p.S3()
	bucket := env.Bucket(t)
	seed(t, env, bucket)
	st := newStack(t, p.Endpoint, p.AccessKey, p.SecretKey, []config.Tileset{{Name: "city", Bucket: bucket, Prefix: "raster/"}})
	bearer := map[string]string{"Authorization": "Bearer " + hmacToken(t, time.Hour, "city")}
	url := st.srv.URL + "/tiles/city/0/0/0.png"
	if resp, _ := get(t, url, bearer); resp.StatusCode != 200 {
		t.Fatalf("before stop: %d", resp.StatusCode)
	}
	p.Stop()
	resp, body := get(t, url, bearer)
	if resp.StatusCode != 502 {
		t.Fatalf("MinIO stopped: got %d %q, want 502", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "refused") {
		t.Errorf("502 body leaks detail: %q", body)
	}
	p.Start(t)
	if resp, _ := get(t, url, bearer); resp.StatusCode != 200 {
		t.Fatalf("after restart: %d, want 200 without restarting the proxy", resp.StatusCode)
	}
}
