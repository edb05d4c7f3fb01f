package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// TestOIDCProvider runs tileproxy behind a real OpenID Provider
// (tools/testidp: zitadel/oidc's op package in a process of its own),
// configured with nothing but the provider's issuer and grant rules, in
// front of MinIO. Tokens come from the provider's token endpoint
// (client credentials, JWT access tokens): discovery finds the keys, the
// signature, audience, grant and expiry are checked, and a rotated
// signing key is picked up without a restart.
func TestOIDCProvider(t *testing.T) {
	mp := testenv.StartMinIO(t)
	env := mp.S3()
	bucket := env.Bucket(t)
	env.Put(t, bucket, map[string]testenv.Object{
		"city/0/0/0.png":  {Body: []byte("city tile"), ContentType: "image/png"},
		"roads/0/0/0.png": {Body: []byte("roads tile"), ContentType: "image/png"},
	})
	idp := testenv.StartIDP(t)
	yaml := fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: ""
readiness_grace: 0s
log: {format: text, level: info, access: false}
auth:
  leeway: 0s
  issuers:
    - issuer: %q
      discovery: true
      audience: [tileproxy]
      grants:
        - {claim: scope, pattern: "tiles:{tileset}"}
s3: {endpoint: %q, use_path_style: true}
tilesets:
  - {name: city, bucket: %s, prefix: city/}
  - {name: roads, bucket: %s, prefix: roads/}
`, idp.Issuer, mp.Endpoint, bucket, bucket)
	srv := serveProcess(t, yaml, "AWS_ACCESS_KEY_ID="+mp.AccessKey, "AWS_SECRET_ACCESS_KEY="+mp.SecretKey, "AWS_REGION=us-east-1")
	get := func(tok, tileset string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.base+"/tiles/"+tileset+"/0/0/0.png", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitReady(t, srv.base)

	city := idp.ClientCredentials(t, "maps-service", "tiles:city")
	if code, body := get(city, "city"); code != 200 || body != "city tile" {
		t.Fatalf("granted tileset: %d %q\n%s", code, body, srv.logs.String())
	}
	if code, _ := get(city, "roads"); code != 403 {
		t.Errorf("tileset outside the grant: %d, want 403", code)
	}
	if code, _ := get(idp.ClientCredentials(t, "maps-service", "openid"), "city"); code != 403 {
		t.Errorf("token without any tiles scope: %d, want 403", code)
	}
	if code, _ := get(idp.ClientCredentials(t, "other-service", "tiles:city"), "city"); code != 401 {
		t.Errorf("token for another audience: %d, want 401", code)
	}
	parts := strings.Split(city, ".")
	tampered := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	if code, _ := get(tampered, "city"); code != 401 {
		t.Errorf("bad signature: %d, want 401", code)
	}

	// Expiry: maps-short's tokens live two seconds (leeway 0).
	short := idp.ClientCredentials(t, "maps-short", "tiles:city")
	if code, _ := get(short, "city"); code != 200 {
		t.Fatalf("short-lived token while valid: %d", code)
	}
	for i := 0; ; i++ {
		code, _ := get(short, "city")
		if code == 401 {
			break
		}
		if i == 100 {
			t.Fatalf("short-lived token still accepted (%d) 10 s after issue", code)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Rotation: tokens signed by a key the proxy has not seen yet are
	// accepted after the one refresh their kid asks for.
	idp.Rotate(t, false)
	rotated := idp.ClientCredentials(t, "maps-service", "tiles:roads")
	for i := 0; ; i++ {
		code, _ := get(rotated, "roads")
		if code == 200 {
			break
		}
		if i == 100 {
			t.Fatalf("token signed by the rotated key still refused (%d)\n%s", code, srv.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := get(city, "city"); code != 200 {
		t.Errorf("token of the previous key, still published: %d, want 200", code)
	}
}

// waitReady polls /readyz until it answers 200 (the provider's keys are
// in), bounded by attempts.
func waitReady(t *testing.T, base string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("not ready after 300 polls")
}
