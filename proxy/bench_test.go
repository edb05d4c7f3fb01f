package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
)

// nopWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler, not httptest's recorder.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchHandler(b *testing.B, cached bool, path string, mod func(*config.Config)) {
	withCache = cached
	defer func() { withCache = false }()
	f := newFixture(b, mod)
	tok := token(b, time.Hour, "a")
	// Metrics and logs are part of the real path; logs go nowhere here.
	f.p.log = discardLogger()
	if f.p.access != nil {
		f.p.access = accesslog.New(accesslog.JSON, io.Discard)
	}
	r := httptest.NewRequest("GET", path, nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	w := &nopWriter{h: http.Header{}}
	f.p.ServeHTTP(w, r) // warm the cache
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		clear(w.h)
		f.p.ServeHTTP(w, r)
	}
}

// BenchmarkHandlerHit is the full handler on a cache hit: path check,
// HS256 verification, grant, cache lookup, headers, body.
func BenchmarkHandlerHit(b *testing.B) { benchHandler(b, true, "/tiles/a/0/0/0.png", nil) }

// BenchmarkHandlerHitNoAccessLog is the hit path with log.access off:
// what the access line costs is the difference.
func BenchmarkHandlerHitNoAccessLog(b *testing.B) {
	benchHandler(b, true, "/tiles/a/0/0/0.png", func(c *config.Config) { c.Log.Access = false })
}

// BenchmarkHandlerMiss is the full handler with every request going to a
// (fake, in-memory) origin: the proxy's own overhead per miss.
func BenchmarkHandlerMiss(b *testing.B) { benchHandler(b, false, "/tiles/a/0/0/0.png", nil) }
