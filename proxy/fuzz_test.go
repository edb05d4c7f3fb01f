package proxy

import (
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/proxy/core"
)

// attackPaths seed the path fuzzers with real traversal tricks.
var attackPaths = []string{
	"/tiles/a/0/0/0.png",
	"/tiles/a/../b/0/0/0.png",
	"/tiles/a/%2e%2e/b/0/0/0.png",
	"/tiles/a/%2E%2e%2Fb/0.png",
	"/tiles/a/..%2f..%2fetc/passwd",
	"/tiles/a/%252e%252e/b/0.png",
	"/tiles/a/%25252e/x",
	"/tiles/a/%c0%ae%c0%ae/b/0.png",
	"/tiles/a/%e0%80%ae%e0%80%ae/b",
	"/tiles/a/\\..\\b\\0.png",
	"/tiles/a/..\\/b",
	"/tiles/a/;/../b/0.png",
	"/tiles/a/..;/b/0.png",
	"/tiles/a/x%00.png",
	"/tiles/a/x\x00.png",
	"//tiles/a/0/0/0.png",
	"/tiles//a/0.png",
	"/tiles/a/./0.png",
	"/tiles/a/.%2e/b/0.png",
	"/tiles/a/%",
	"/tiles/a/%zz",
	"/tiles/a/\u2024\u2024/b",
	"/tiles/a/%e2%80%a4%e2%80%a4/b",
	"/tiles/a/" + strings.Repeat("x", 1100) + ".png",
	"/tiles/a/" + strings.Repeat("../", 50) + "b",
	"/tiles/a/%u002e%u002e/b",
	"/tiles/a/0/0/0.png?x=../../b",
	"/tiles/a.json",
	"/tiles/../tiles/a/0.png",
}

// FuzzCheckPath: whatever checkPath accepts decodes cleanly and has no
// dot segment, empty segment, backslash or control byte: ServeMux has
// nothing to clean or redirect, and no key can climb out of a prefix.
func FuzzCheckPath(f *testing.F) {
	for _, p := range attackPaths {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := checkPath(raw)
		if err != nil {
			if !errors.Is(err, core.ErrBadPath) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		dec, derr := url.PathUnescape(raw)
		if derr != nil {
			t.Fatalf("accepted undecodable %q", raw)
		}
		if strings.ContainsAny(dec, "\\\x00") {
			t.Fatalf("accepted %q (decoded %q)", raw, dec)
		}
		segs := strings.Split(dec, "/")
		for i, s := range segs {
			if s == "." || s == ".." || (s == "" && i != 0 && i != len(segs)-1) {
				t.Fatalf("accepted %q with segment %q", raw, s)
			}
		}
	})
}

// FuzzTilePathIsolation sends arbitrary paths with a token for tileset a
// through the whole handler: the origin must only ever be asked for keys
// under a/ with no dot segments, and b's tile must never come back.
func FuzzTilePathIsolation(f *testing.F) {
	fx := newFixture(f, nil)
	fx.p.log = discardLogger()
	auth := "Bearer " + token(f, time.Hour, "a")
	for _, p := range attackPaths {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if target == "" || target[0] != '/' || strings.ContainsAny(target, " \r\n#") {
			return // not a request target a client can send on the wire
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.URL, r.RequestURI = u, target
		r.Header.Set("Authorization", auth)
		w := httptest.NewRecorder()
		fx.p.ServeHTTP(w, r)
		if strings.Contains(w.Body.String(), "PNG-b") {
			t.Fatalf("%q returned b's tile", target)
		}
		for _, req := range fx.mem.Requests() {
			if !strings.HasPrefix(req.Key, "a/") || strings.Contains("/"+req.Key+"/", "/../") || req.Bucket != "tiles" {
				t.Fatalf("%q made the origin fetch %s/%s", target, req.Bucket, req.Key)
			}
		}
	})
}
