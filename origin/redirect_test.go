package origin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

// TestRedirectsNotFollowed: an S3 endpoint that answers 307 or 308 (which
// the SDK's own client follows, to any host) gets an error, and the host
// it points at is never asked.
func TestRedirectsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "image/png")
		w.Write([]byte("someone else's tile"))
	}))
	defer other.Close()
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path, code)
		}))
		cfg := config.Default()
		cfg.S3.Endpoint = endpoint.URL
		cfg.S3.UsePathStyle = true
		cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "b", Prefix: "p/"}}
		cfg.ApplyDefaults()
		o, err := origin.New(context.Background(), &cfg, origin.Deps{Credentials: credentials.NewStaticCredentialsProvider("k", "s", "")})
		if err != nil {
			t.Fatal(err)
		}
		obj, err := o.Get(t.Context(), origin.Request{Tileset: "a", Bucket: "b", Key: "p/0/0/0.png"})
		if err == nil {
			obj.Body.Close()
			t.Errorf("%d: got an object, want an error", code)
		}
		endpoint.Close()
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target was asked %d times", n)
	}
}
