package proxy

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

// TestOriginSeesNoClientCredentials sends a request full of the client's
// credentials and headers through the real S3 client to a fake S3 over
// HTTP, and looks at what arrived there: only the SDK's own signature and
// the conditionals tileproxy chose to pass on, nothing of the client's.
func TestOriginSeesNoClientCredentials(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("tiles"); err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 64))
	if _, err := backend.PutObject("tiles", "a/0/0/0.png", map[string]string{"Content-Type": "image/png"}, bytes.NewReader(body), int64(len(body)), nil); err != nil {
		t.Fatal(err)
	}
	fake := gofakes3.New(backend).Server()
	var mu sync.Mutex
	var seen []http.Header
	s3srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	defer s3srv.Close()

	cfg := config.Default()
	cfg.Auth.HMACSecret = secret
	cfg.S3.Endpoint, cfg.S3.UsePathStyle = s3srv.URL, true
	cfg.Cache.MaxBytes, cfg.Cache.MaxObjectBytes = 0, 0 // every request goes to S3, with the client's conditionals
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	v, err := auth.New(t.Context(), cfg.Auth, auth.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := origin.New(t.Context(), &cfg, origin.Deps{Logger: log,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDPROXY", "proxy-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(&cfg, Deps{Verifier: v, Fetcher: o, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, time.Hour, "a")
	r := httptest.NewRequest("GET", "/tiles/a/0/0/0.png", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Cookie", "__Host-tileproxy_token="+tok+"; session=client-session")
	r.Header.Set("X-Client-Secret", "client-secret-value")
	r.Header.Set("X-Forwarded-For", "203.0.113.7")
	r.Header.Set("If-None-Match", `"client-etag"`)
	r.Header.Set("Range", "bytes=0-9")
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	if w.Code != 206 || w.Body.String() != string(body[:10]) {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}

	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("fake S3 saw %d requests, want 1", len(seen))
	}
	h := seen[0]
	if a := h.Get("Authorization"); !strings.HasPrefix(a, "AWS4-HMAC-SHA256 Credential=AKIDPROXY/") {
		t.Errorf("S3 got Authorization %q, want the proxy's own SigV4", a)
	}
	for name, vals := range h {
		for _, v := range vals {
			for _, leak := range []string{tok, "client-session", "client-secret-value", "203.0.113.7"} {
				if strings.Contains(v, leak) {
					t.Errorf("S3 request header %s carries the client's %q", name, leak)
				}
			}
		}
	}
	for _, k := range []string{"Cookie", "X-Client-Secret", "X-Forwarded-For"} {
		if _, ok := h[k]; ok {
			t.Errorf("S3 request has the client's %s header", k)
		}
	}
	// What tileproxy passes on on purpose, it passes on as it was.
	if h.Get("Range") != "bytes=0-9" || h.Get("If-None-Match") != `"client-etag"` {
		t.Errorf("conditionals not passed: Range %q If-None-Match %q", h.Get("Range"), h.Get("If-None-Match"))
	}
}
