package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/coalesce"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// TestFileBodyOverTCP serves a cached tile large enough to live in the
// cache's memory file through a real server on a coalesce listener, as
// tileproxy serve does, so the body goes out with sendfile: plain hits,
// Range, HEAD and 304 must match the object, and the access log must
// count the bytes sent.
func TestFileBodyOverTCP(t *testing.T) {
	withCache = true
	defer func() { withCache = false }()
	f := newFixture(t, nil)
	body := make([]byte, 30000)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range body {
		body[i] = byte(r.Uint32())
	}
	f.mem.Put("tiles", "a/2/1/1.png", origintest.Object{Body: body, ContentType: "image/png"})

	base, srv := serveCoalesced(t, f.p)
	url := base + "/tiles/a/2/1/1.png"
	auth := "Bearer " + token(t, time.Hour, "a")

	for i, tc := range []struct {
		method, hdr, val string
		code             int
		cache            string
		want             []byte
		length           string
	}{
		{"GET", "", "", 200, "MISS", body, "30000"},
		{"GET", "", "", 200, "HIT", body, "30000"},
		{"GET", "", "", 200, "HIT", body, "30000"}, // keep-alive
		{"GET", "Range", "bytes=1000-21999", 206, "HIT", body[1000:22000], "21000"},
		{"GET", "Range", "bytes=-100", 206, "HIT", body[29900:], "100"},
		{"HEAD", "", "", 200, "HIT", nil, "30000"},
		{"GET", "If-None-Match", origintest.ETag(body), 304, "HIT", nil, ""},
		{"GET", "", "", 200, "HIT", body, "30000"},
	} {
		req, _ := http.NewRequest(tc.method, url, nil)
		req.Header.Set("Authorization", auth)
		if tc.hdr != "" {
			req.Header.Set(tc.hdr, tc.val)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := fmt.Sprintf("#%d %s %s %s", i, tc.method, tc.hdr, tc.val)
		if err != nil || resp.StatusCode != tc.code || !bytes.Equal(got, tc.want) {
			t.Fatalf("%s: %d, %d bytes, %v; want %d and %d bytes", name, resp.StatusCode, len(got), err, tc.code, len(tc.want))
		}
		if resp.Header.Get("X-Cache") != tc.cache || resp.Header.Get("Content-Length") != tc.length {
			t.Errorf("%s: X-Cache %q, Content-Length %q; want %q, %q", name, resp.Header.Get("X-Cache"), resp.Header.Get("Content-Length"), tc.cache, tc.length)
		}
	}
	if c := f.cache; c == nil || !c.FileBacked() {
		t.Fatal("the cache keeps no bodies in a memory file here: the test proved nothing about them")
	}
	// The client can have the last byte before the handler has written
	// its access line; Shutdown returns once every connection is idle,
	// that is, once every handler has returned.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if hits := strings.Count(f.log.String(), "status=200 bytes=30000"); hits < 4 {
		t.Errorf("the access log counts 30000 bytes for %d of the 4 whole answers:\n%s", hits, f.log.String())
	}
}

// serveCoalesced serves h on loopback through a coalesce listener, as
// tileproxy serve does, until the test ends, and returns its base URL
// and server.
func serveCoalesced(t *testing.T, h http.Handler) (string, *http.Server) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := coalesce.NewListener(coalesce.Config{}, tcp)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + tcp.Addr().String(), srv
}
