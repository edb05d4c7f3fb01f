package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// TestWarmStart runs tileproxy serve on MinIO with cache.warm asking for
// z0-2 of one tileset and a keys file of another: /readyz waits for the
// warm, the metrics and the log show its progress, MinIO serves each
// tile once, and then every warmed tile is a hit with no GET more.
func TestWarmStart(t *testing.T) {
	mp := testenv.StartMinIO(t)
	env := mp.S3()
	bucket := env.Bucket(t)
	objs := map[string]testenv.Object{}
	for z := range 3 {
		for x := range 1 << z {
			for y := range 1 << z {
				objs[fmt.Sprintf("base/%d/%d/%d.png", z, x, y)] = testenv.Object{Body: []byte(fmt.Sprint("base ", z, x, y)), ContentType: "image/png"}
			}
		}
	}
	hot := []string{"14/8190/5447.png", "14/8191/5447.png"}
	for _, p := range hot {
		objs["hot/"+p] = testenv.Object{Body: []byte("hot " + p), ContentType: "image/png"}
	}
	env.Put(t, bucket, objs)
	keys := filepath.Join(t.TempDir(), "hot.txt")
	os.WriteFile(keys, []byte("# the city centre\n"+strings.Join(hot, "\n")+"\n14/1/1.png\n"), 0o600)

	secret := strings.Repeat("w", 32)
	metricsAddr := freeAddr(t)
	s := serveProcess(t, fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: %q
readiness_grace: 1m
log: {format: text, level: info, access: false}
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
cache:
  warm:
    concurrency: 4
    tiles:
      - {tileset: base, zoom: 0-2}
      - {tileset: hot, keys: %q}
tilesets:
  - {name: base, bucket: %s, prefix: base/, maxzoom: 2}
  - {name: hot, bucket: %s, prefix: hot/}
`, metricsAddr, secret, mp.Endpoint, keys, bucket, bucket), "AWS_ACCESS_KEY_ID="+mp.AccessKey, "AWS_SECRET_ACCESS_KEY="+mp.SecretKey, "AWS_REGION=us-east-1")
	waitReady(t, s.base)
	// The "ready" line follows /readyz turning 200.
	for i := 0; i < 100 && !strings.Contains(s.logs.String(), "msg=ready"); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	logs := s.logs.String()
	done := strings.Index(logs, "cache warm done")
	ready := strings.Index(logs, `msg=ready`)
	if done < 0 || ready < done {
		t.Fatalf("ready before the warm was done (warm done at %d, ready at %d):\n%s", done, ready, logs)
	}
	for _, want := range []string{`msg="cache warm started" tiles=24`, `msg="cache warm progress"`, "cached=23 missing=1 failed=0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	m := string(scrape(t, metricsAddr))
	for _, want := range []string{"tileproxy_cache_warm_planned_tiles 24", `tileproxy_cache_warm_tiles_total{result="cached"} 23`, `tileproxy_cache_warm_tiles_total{result="missing"} 1`, "tileproxy_cache_objects 24"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: time.Hour, Subject: "warm"})
	if err != nil {
		t.Fatal(err)
	}
	before := minioGETs(t, mp.Endpoint)
	for _, p := range append([]string{"/tiles/base/0/0/0.png", "/tiles/base/2/3/1.png"}, "/tiles/hot/"+hot[0], "/tiles/hot/"+hot[1]) {
		if code, xcache := callCache(t, s.base+p, tok); code != 200 || xcache != "HIT" {
			t.Errorf("%s after the warm: %d %s, want a 200 hit", p, code, xcache)
		}
	}
	if got := minioGETs(t, mp.Endpoint) - before; got != 0 {
		t.Errorf("MinIO served %d GETs for warmed tiles, want 0", got)
	}
	s.stop(t)
}
