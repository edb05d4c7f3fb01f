package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

type rawAnswer struct {
	code int
	hdr  http.Header
	body string
}

// sendRaw writes req to addr byte for byte and reads one answer.
func sendRaw(t *testing.T, addr, req string) rawAnswer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return rawAnswer{resp.StatusCode, resp.Header, string(b)}
}

func get(path string, hdrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: tiles.test\r\n", path)
	for _, h := range hdrs {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.String()
}

func method(m, path, authz string) string {
	return fmt.Sprintf("%s %s HTTP/1.1\r\nHost: tiles.test\r\nAuthorization: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", m, path, authz)
}

// TestHostileInputs sends each request byte for byte to the fully wired
// server and checks the exact status, a short body, and that nothing
// internal (bucket, key, AWS wording, stack, secrets) comes back.
func TestHostileInputs(t *testing.T) {
	var logs testenv.SyncBuffer
	_, base := runningApp(t, &logs)
	addr := strings.TrimPrefix(base, "http://")
	secret := []byte(metricsSecret)
	mint := func(ttl time.Duration, now time.Time, tilesets ...string) string {
		tok, err := auth.MintHMAC(auth.MintOptions{Secret: secret, Tilesets: tilesets, TTL: ttl, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(time.Hour, time.Time{}, "demo")
	bearer := "Authorization: Bearer " + good
	enc := base64.RawURLEncoding.EncodeToString
	none := enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d,"tilesets":"*"}`, time.Now().Add(time.Hour).Unix()))) + "."
	pub, _ := os.ReadFile("../../testdata/keys/rsa.pub.pem")
	withPub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "tilesets": "*"}).SignedString(pub)
	expStr, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": "never", "tilesets": "*"}).SignedString(secret)
	wrong, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "tilesets": "*"}).SignedString([]byte("wrong-secret-wrong-secret-wrong-!"))
	expired := mint(time.Minute, time.Now().Add(-time.Hour), "demo")
	tile := "/tiles/demo/0/0/0.png"
	etag := sendRaw(t, addr, get(tile, bearer)).hdr.Get("Etag")
	manyRanges := "Range: bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 1000), ",")
	manyTags := "If-None-Match: " + strings.Repeat(`"00000000000000000000000000000000", `, 700) + etag

	for i, tc := range []struct {
		name string
		req  string
		want int
	}{
		{"dotdot", get("/tiles/demo/../vector/0/0/0.pbf", bearer), 400},
		{"encoded dotdot", get("/tiles/demo/%2e%2e/vector/0/0/0.pbf", bearer), 400},
		{"encoded dotdot slash", get("/tiles/demo/%2E%2E%2Fvector%2F0.pbf", bearer), 400},
		{"double encoded", get("/tiles/demo/%252e%252e/x.png", bearer), 400},
		{"encoded backslash", get("/tiles/demo/..%5cvector/0.pbf", bearer), 400},
		{"raw backslash", get(`/tiles/demo/\..\vector\0.pbf`, bearer), 400},
		{"double slash", get("/tiles/demo//0/0/0.png", bearer), 400},
		{"dot segment", get("/tiles/demo/./0/0/0.png", bearer), 400},
		{"encoded NUL", get("/tiles/demo/0%00.png", bearer), 400},
		{"overlong UTF-8", get("/tiles/demo/%c0%ae%c0%ae/x.png", bearer), 400},
		{"long key", get("/tiles/demo/"+strings.Repeat("k", 1100)+".png", bearer), 400},
		{"leading double slash", get("//tiles/demo/0/0/0.png", bearer), 400},
		{"truncated escape", get("/tiles/demo/0/0/0.png%", bearer), 400},
		{"POST", method("POST", tile, "Bearer "+good), 405},
		{"PUT", method("PUT", tile, "Bearer "+good), 405},
		{"DELETE", method("DELETE", tile, "Bearer "+good), 405},
		{"PATCH", method("PATCH", tile, "Bearer "+good), 405},
		{"OPTIONS", method("OPTIONS", tile, "Bearer "+good), 405},
		{"TRACE", method("TRACE", tile, "Bearer "+good), 405},
		{"GET session", get("/auth/session", bearer), 405},
		{"40 KB URL", get("/tiles/demo/"+strings.Repeat("u", 40<<10)+".png", bearer), 431},
		{"40 KB header", get(tile, bearer, "X-Junk: "+strings.Repeat("j", 40<<10)), 431},
		{"no token", get(tile), 401},
		{"garbage bearer", get(tile, "Authorization: Bearer garbage"), 401},
		{"empty bearer", get(tile, "Authorization: Bearer "), 401},
		{"basic auth", get(tile, "Authorization: Basic dXNlcjpwYXNz"), 401},
		{"alg none", get(tile, "Authorization: Bearer "+none), 401},
		{"HS256 with public key", get(tile, "Authorization: Bearer "+withPub), 401},
		{"expired", get(tile, "Authorization: Bearer "+expired), 401},
		{"wrong secret", get(tile, "Authorization: Bearer "+wrong), 401},
		{"9 KB token", get(tile, "Authorization: Bearer "+strings.Repeat("e", 9<<10)), 401},
		{"exp as string", get(tile, "Authorization: Bearer "+expStr), 401},
		{"two Authorization headers", get(tile, bearer, bearer), 401},
		{"cookie garbage", get(tile, "Cookie: __Host-tileproxy_token=garbage"), 401},
		{"cookie empty", get(tile, "Cookie: __Host-tileproxy_token="), 401},
		{"plain cookie planted beside the __Host- one", get(tile, "Cookie: tileproxy_token="+good), 401},
		{"token pasted into the path", get(tile+";access_token="+good, bearer), 404},
		{"query token twice", get(tile + "?access_token=" + good + "&access_token=" + good), 401},
		{"query garbage", get(tile + "?access_token=%zz"), 401},
		{"bad header, good cookie", get(tile, "Authorization: Bearer bad", "Cookie: __Host-tileproxy_token="+good), 401},
		{"not granted", get("/tiles/vector/0/0/0.pbf", bearer), 403},
		{"unknown tileset, not granted", get("/tiles/secret/0/0/0.png", bearer), 403},
		{"missing tile", get("/tiles/demo/9/9/9.png", bearer), 404},
		{"1000 ranges", get(tile, bearer, manyRanges), 200},
		{"range garbage", get(tile, bearer, "Range: bytes=abc"), 416},
		{"range past the end", get(tile, bearer, "Range: bytes=999999-"), 416},
		{"700 ETags, the right one last", get(tile, bearer, manyTags), 304},
		{"malformed Host", "GET " + tile + " HTTP/1.1\r\nHost: a b\r\n" + bearer + "\r\n\r\n", 400},
		{"no Host", "GET " + tile + " HTTP/1.1\r\n" + bearer + "\r\n\r\n", 400},
		{"bad method token", "G\x01T " + tile + " HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"HTTP/0.9-ish", "GET " + tile + "\r\n\r\n", 400},
		{"ok after all that", get(tile, bearer), 200},
	} {
		t.Run(fmt.Sprintf("%02d %s", i+1, tc.name), func(t *testing.T) {
			got := sendRaw(t, addr, tc.req)
			if got.code != tc.want {
				t.Fatalf("got %d %.200q, want %d", got.code, got.body, tc.want)
			}
			if got.code < 300 {
				return
			}
			if len(got.body) > 100 || strings.Count(strings.TrimSpace(got.body), "\n") > 0 {
				t.Errorf("body not one short line: %q", got.body)
			}
			for _, leak := range []string{demoBucket, "raster/", "vector/", "NoSuchKey", "AccessDenied", "goroutine", "panic", ".go:", metricsSecret, "metrics-aws-secret-key", good} {
				if strings.Contains(got.body, leak) || strings.Contains(fmt.Sprint(got.hdr), leak) {
					t.Errorf("answer leaks %q: %q %v", leak, got.body, got.hdr)
				}
			}
		})
	}
	// The process is fine, and nothing secret reached the logs.
	if got := sendRaw(t, addr, get("/healthz")); got.code != 200 {
		t.Errorf("healthz after hostile inputs: %d", got.code)
	}
	for _, s := range []string{good, metricsSecret, "metrics-aws-secret-key", wrong, withPub} {
		if strings.Contains(logs.String(), s) {
			t.Error("logs contain a token or secret")
		}
	}
}

// TestSlowloris: a client trickling its headers is cut off after the
// read-header timeout instead of holding the connection.
func TestSlowloris(t *testing.T) {
	_, base := runningAppWith(t, io.Discard, func(a *app) {
		a.limits = defaultLimits
		a.limits.readHeader = 500 * time.Millisecond
	})
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
			return // cut off
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 512)
		if n, err := c.Read(buf); n > 0 || (err != nil && !os.IsTimeout(err)) {
			return // the server answered (408/400) or closed: cut off
		}
	}
	t.Fatal("a client trickling headers held the connection for 10 s")
}
