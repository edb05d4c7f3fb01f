package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`
auth: {hmac_secret: "${TP_TEST_SECRET}"}
tilesets: [{name: city, bucket: private-tiles, prefix: city/}]
`), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`
listen: nope
auth: {hmac_secret: short}
tilesets: [{name: "x y", bucket: B}]
`), 0o600)
	t.Setenv("TP_TEST_SECRET", strings.Repeat("s", 32))

	var out, errb bytes.Buffer
	if code := run([]string{"check", "-config", good}, &out, &errb); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "-config", bad}, &out, &errb); code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	for _, want := range []string{"listen:", "auth.hmac_secret:", ".name:", ".bucket:", "4 problem(s)"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, errb.String())
		}
	}
	if code := run([]string{"check", "-config", filepath.Join(dir, "missing.yaml")}, &out, &errb); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
}

func TestExampleConfigsCheck(t *testing.T) {
	t.Setenv("TILEPROXY_HMAC_SECRET", strings.Repeat("s", 32))
	files, _ := filepath.Glob("../../testdata/config/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs in testdata/config")
	}
	for _, f := range files {
		var out, errb bytes.Buffer
		if code := run([]string{"check", "-config", f}, &out, &errb); code != 0 {
			t.Errorf("%s: exit %d: %s", f, code, errb.String())
		}
	}
}

func TestToken(t *testing.T) {
	t.Setenv("TP_SECRET", strings.Repeat("k", 32))
	var out, errb bytes.Buffer
	if code := run([]string{"token", "-secret-env", "TP_SECRET", "-tilesets", "a,b", "-ttl", "1h"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(strings.TrimSpace(out.String()), "."); n != 2 {
		t.Errorf("not a JWT: %q", out.String())
	}
	errb.Reset()
	if code := run([]string{"token", "-secret-env", "TP_UNSET_VAR", "-tilesets", "a"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "TP_UNSET_VAR") {
		t.Errorf("unset secret: exit %d %q", code, errb.String())
	}
	// Signed as an issuer would, with claims for its grant rules: an
	// issuers entry holding the public key grants from them.
	out.Reset()
	errb.Reset()
	if code := run([]string{"token", "-key", "../../testdata/keys/rsa.pem", "-kid", "dev", "-iss", "https://idp.dev.example", "-aud", "tileproxy",
		"-claim", "scope=openid tiles:a", "-claim", `realm_access={"roles":["analysts"]}`}, &out, &errb); code != 0 {
		t.Fatalf("-key: exit %d: %s", code, errb.String())
	}
	no := false
	v, err := auth.New(t.Context(), config.Auth{Leeway: config.Duration(time.Second), Issuers: []config.Issuer{{
		Issuer: "https://idp.dev.example", Discovery: &no, PublicKeys: []string{"../../testdata/keys/rsa.pub.pem"},
		Audience: config.StringList{"tileproxy"}, Grants: []config.GrantRule{
			{Claim: "scope", Pattern: "tiles:{tileset}"},
			{Claim: "realm_access.roles", Values: map[string][]config.GrantValue{"analysts": config.Grants("b")}},
		},
	}}}, auth.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(t.Context(), strings.TrimSpace(out.String()))
	if err != nil || !p.Allows("a") || !p.Allows("b") || p.Allows("c") {
		t.Fatalf("token minted with -key and -claim: %v", err)
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "tileproxy") {
		t.Errorf("version: %d %q", code, out.String())
	}
}

// TestDemo runs the demo as a newcomer would and follows its printed link:
// the viewer loads, the fragment token opens a cookie session, a tile comes;
// with -tls over https and HTTP/2, trusting the printed certificate.
func TestDemo(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "tls"}[useTLS], func(t *testing.T) { testDemo(t, useTLS) })
	}
}

func testDemo(t *testing.T, useTLS bool) {
	ctx, cancel := context.WithCancel(t.Context())
	urls := make(chan string, 1)
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		done <- runDemo(ctx, demoOptions{listen: "127.0.0.1:0", ttl: time.Hour, tls: useTLS}, &out, io.Discard, func(u string) { urls <- u })
	}()
	var viewer string
	select {
	case viewer = <-urls:
	case err := <-done:
		t.Fatalf("demo exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not start")
	}
	base, frag, _ := strings.Cut(viewer, "/#access_token=")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	if useTLS {
		_, after, _ := strings.Cut(out.String(), "curl --cacert ")
		pem, err := os.ReadFile(strings.Fields(after)[0])
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) || !strings.HasPrefix(base, "https://") {
			t.Fatalf("the demo printed no certificate to trust (%v), or %s is not https:\n%s", err, base, out.String())
		}
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	}
	resp, err := c.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "/auth/session") {
		t.Fatalf("viewer: %d", resp.StatusCode)
	}
	if want := map[bool]int{false: 1, true: 2}[useTLS]; resp.ProtoMajor != want {
		t.Errorf("viewer over %s", resp.Proto)
	}
	req, _ := http.NewRequest("POST", base+"/auth/session", nil)
	req.Header.Set("Authorization", "Bearer "+frag)
	if resp, err = c.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("session: %v %v", resp, err)
	}
	resp, err = c.Get(base + "/tiles/demo/1/1/0.png")
	if err != nil {
		t.Fatal(err)
	}
	tile, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want, _ := os.ReadFile("../../testdata/tiles/raster/1/1/0.png")
	if resp.StatusCode != 200 || !bytes.Equal(tile, want) {
		t.Fatalf("tile via cookie: %d, %d bytes (want the testdata tile)", resp.StatusCode, len(tile))
	}
	// The first map of the viewer: the world, from the demo's archive.
	req, _ = http.NewRequest("GET", base+"/tiles/world/1/1/0.mvt", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("world tile: %d %q", resp.StatusCode, resp.Header.Get("Content-Encoding"))
	}
	if !strings.Contains(out.String(), viewer) {
		t.Errorf("printed output lacks the viewer link")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("demo shutdown: %v", err)
	}
}
