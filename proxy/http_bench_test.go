package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/coalesce"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// benchHTTP drives h over real HTTP on loopback from 16 parallel clients
// in the same process: the in-process counterpart of bench/run.sh. With
// wrapped, connections go through a coalesce listener, as tileproxy
// serve's do (and cached bodies of 8 KiB and more go out with sendfile).
func benchHTTP(b *testing.B, h http.Handler, tok string, wrapped bool) {
	srv := startHTTP(b, h, wrapped)
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", srv.URL+"/tiles/a/0/0/0.png", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// startHTTP serves h on loopback, through a coalesce listener when
// wrapped (as tileproxy serve's connections are).
func startHTTP(b *testing.B, h http.Handler, wrapped bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	if wrapped {
		ln, err := coalesce.NewListener(coalesce.Config{}, srv.Listener)
		if err != nil {
			b.Fatal(err)
		}
		srv.Listener = ln
	}
	srv.Start()
	return srv
}

// BenchmarkHTTPBare is the floor: a handler that sets three headers and
// writes a 20 KB body.
func BenchmarkHTTPBare(b *testing.B) {
	body := make([]byte, 20000)
	benchHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Cache-Control", "private, max-age=3600")
		w.Header().Set("ETag", `"x"`)
		w.Write(body)
	}), "x", false)
}

// BenchmarkHTTPProxy is tileproxy on a cache hit for the same body, with
// an HS256 token in the header.
func BenchmarkHTTPProxy(b *testing.B) {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(b, nil)
	f.p.log = discardLogger()
	f.mem.Put("tiles", "a/0/0/0.png", origintest.Object{Body: make([]byte, 20000), ContentType: "image/png"})
	benchHTTP(b, f.p, token(b, time.Hour, "a"), true)
}
