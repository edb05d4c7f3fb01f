package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/golang-jwt/jwt/v5"
	orbmvt "github.com/paulmach/orb/encoding/mvt"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/logging"
	"github.com/tileproxy/tileproxy/internal/testkit/mvttest"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

// TestEntitlementsOnMinIO: on a MinIO of its own, whose request counter
// is exact, two principals with different layer scopes each get only
// their layers of one tile for one GetObject between them, and a tile
// outside a principal's area is refused without any request to MinIO.
func TestEntitlementsOnMinIO(t *testing.T) {
	mp := testenv.StartMinIO(t)
	env := mp.S3()
	ctx := context.Background()
	if _, err := env.Client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("maps")}); err != nil {
		t.Fatal(err)
	}
	tile := mvttest.Tile(true, "roads", "water", "pipes")
	env.Put(t, "maps", map[string]testenv.Object{
		"v/3/4/2.pbf": {Body: tile, ContentType: "application/x-protobuf", ContentEncoding: "gzip"},
		"v/3/0/0.pbf": {Body: tile, ContentType: "application/x-protobuf", ContentEncoding: "gzip"},
	})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "north.geojson"), []byte(`{"type":"Polygon","coordinates":[[[5,45],[40,45],[40,60],[5,60],[5,45]]]}`), 0o600)
	secret := "entitlements-test-secret-0123456789"
	file := filepath.Join(dir, "tileproxy.yaml")
	os.WriteFile(file, fmt.Appendf(nil, `listen: 127.0.0.1:0
drain_delay: 0s
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
areas: {north: north.geojson}
tilesets: [{name: v, bucket: maps, prefix: v/, format: pbf, maxzoom: 14}]
`, secret, mp.Endpoint), 0o600)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	runCtx, cancel := context.WithCancel(ctx)
	a, err := newApp(runCtx, cfg, &logging.Logs{Log: log}, origin.Deps{Logger: log,
		Credentials: credentials.NewStaticCredentialsProvider(mp.AccessKey, mp.SecretKey, "")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addrs, done := make(chan string, 1), make(chan error, 1)
	go func() { done <- a.run(runCtx, func(addr string) { addrs <- addr }) }()
	defer func() { cancel(); <-done }()
	base := "http://" + <-addrs
	tok := func(sub string, grants any) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "tilesets": grants,
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(path, token string) (int, []string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept-Encoding", "gzip") // asked for: the client then leaves the body gzip'd
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return resp.StatusCode, nil
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(zr)
		ls, err := orbmvt.Unmarshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range ls {
			names = append(names, l.Name)
		}
		return 200, names
	}
	before := minioGETs(t, mp.Endpoint)
	roads := tok("roads", map[string]any{"v": map[string]any{"layers": []any{"roads"}, "areas": []any{"north"}}})
	wet := tok("wet", map[string]any{"v": map[string]any{"layers": []any{"water", "pipes"}}})
	if code, got := get("/tiles/v/3/4/2.pbf", roads); code != 200 || !slices.Equal(got, []string{"roads"}) {
		t.Fatalf("roads: %d %v", code, got)
	}
	if code, got := get("/tiles/v/3/4/2.pbf", wet); code != 200 || !slices.Equal(got, []string{"water", "pipes"}) {
		t.Fatalf("water and pipes: %d %v", code, got)
	}
	if n := minioGETs(t, mp.Endpoint) - before; n != 1 {
		t.Fatalf("two layer sets of one tile cost MinIO %d GetObject requests, want 1", n)
	}
	before = minioGETs(t, mp.Endpoint)
	if code, _ := get("/tiles/v/3/0/0.pbf", roads); code != 403 {
		t.Fatalf("a tile outside the area: %d, want 403", code)
	}
	if n := minioGETs(t, mp.Endpoint) - before; n != 0 {
		t.Fatalf("a denied tile cost MinIO %d GetObject requests", n)
	}
}
