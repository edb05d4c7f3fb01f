package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

// minioGETs is how many GetObject requests MinIO says it has served,
// from its own metrics (the private MinIO serves them without auth).
func minioGETs(t testing.TB, endpoint string) int {
	t.Helper()
	resp, err := http.Get(endpoint + "/minio/metrics/v3/api/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "minio_api_requests_total{") && strings.Contains(line, `name="GetObject"`) {
			f := strings.Fields(line)
			n, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			total += int(n)
		}
	}
	return total
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHAProxy runs Debian's haproxy in the foreground in front of the
// replicas with the given balance lines, and returns its base URL.
// serverOpts, when given, end each server line ("proto h2").
func startHAProxy(t testing.TB, balance string, replicas []*served, serverOpts ...string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		testenv.Require(t, "haproxy", "it is not installed (apt-get install haproxy)")
	}
	front := freeAddr(t)
	var servers strings.Builder
	for i, r := range replicas {
		fmt.Fprintf(&servers, "    server r%d %s%s\n", i+1, strings.TrimPrefix(r.base, "http://"), strings.Join(append([]string{""}, serverOpts...), " "))
	}
	// The backend as deploy/compose/haproxy.cfg has it (TestScaleConfigs
	// holds that file to the same directives), on loopback, with quick
	// health checks so a stopped replica leaves within a moment.
	cfg := fmt.Sprintf(`global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
frontend tiles
    bind %s
    default_backend tileproxy
backend tileproxy
%s
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 100ms fall 1 rise 1
%s`, front, balance, servers.String())
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var logs testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := "http://" + front
	for i := 0; ; i++ {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if i == 300 {
			t.Fatalf("haproxy did not come up:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsistentHashRoutingOnHAProxy is the scale-out proof: three
// tileproxy replicas behind a real HAProxy hashing the path consistently
// (path only: a token in the query must not move a tile) fetch each tile
// from MinIO once, where round robin fetches it once per replica; when a
// replica stops, only its share of tiles moves and no request fails.
func TestConsistentHashRoutingOnHAProxy(t *testing.T) {
	mp := testenv.StartMinIO(t)
	env := mp.S3()
	bucket := env.Bucket(t)
	const n = 60
	objs := map[string]testenv.Object{}
	for _, prefix := range []string{"hash", "rr"} {
		for i := range n {
			objs[fmt.Sprintf("%s/%d/%d/0.png", prefix, i/8, i%8)] = testenv.Object{Body: []byte(fmt.Sprintf("tile %s %d", prefix, i)), ContentType: "image/png"}
		}
	}
	env.Put(t, bucket, objs)
	secret := strings.Repeat("r", 32)
	yaml := fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: ""
drain_delay: 500ms
shutdown_timeout: 5s
readiness_grace: 0s
log: {format: text, level: info, access: false}
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
tilesets:
  - {name: hash, bucket: %s, prefix: hash/}
  - {name: rr, bucket: %s, prefix: rr/}
`, secret, mp.Endpoint, bucket, bucket)
	creds := minioCreds(mp.AccessKey, mp.SecretKey)
	var replicas []*served
	for range 3 {
		replicas = append(replicas, serveProcess(t, yaml, creds...))
	}
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: time.Hour, Subject: "scale"})
	if err != nil {
		t.Fatal(err)
	}
	// get fetches one tile, with the token in the header or the query.
	get := func(base, path string, inQuery bool) (int, string) {
		t.Helper()
		url := base + path
		req, _ := http.NewRequest("GET", url, nil)
		if inQuery {
			req.URL.RawQuery = "access_token=" + tok
		} else {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return -1, ""
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Cache")
	}
	path := func(prefix string, i int) string { return fmt.Sprintf("/tiles/%s/%d/%d/0.png", prefix, i/8, i%8) }

	hashed := startHAProxy(t, "    balance uri path-only\n    hash-type consistent", replicas)
	before := minioGETs(t, mp.Endpoint)
	for pass := range 2 {
		for i := range n {
			// The second pass carries the token in the query: the path
			// alone decides the replica, so it is still a hit.
			if code, _ := get(hashed, path("hash", i), pass == 1); code != 200 {
				t.Fatalf("pass %d, tile %d: %d", pass, i, code)
			}
		}
	}
	if got := minioGETs(t, mp.Endpoint) - before; got != n {
		t.Errorf("consistent hash: MinIO served %d GETs for %d distinct tiles asked twice, want %d", got, n, n)
	}

	robin := startHAProxy(t, "    balance roundrobin", replicas)
	before = minioGETs(t, mp.Endpoint)
	for i := range n {
		for range 3 {
			if code, _ := get(robin, path("rr", i), false); code != 200 {
				t.Fatalf("round robin, tile %d: %d", i, code)
			}
		}
	}
	rrGETs := minioGETs(t, mp.Endpoint) - before
	if rrGETs < 2*n {
		t.Errorf("round robin: MinIO served %d GETs for %d tiles asked three times; want about %d (one per replica)", rrGETs, n, 3*n)
	}
	t.Logf("S3 GETs for %d tiles: consistent hash %d, round robin %d", n, n, rrGETs)

	// One replica stops (it drains: /readyz says 503, HAProxy takes it out,
	// and requests in flight finish) while requests keep coming.
	before = minioGETs(t, mp.Endpoint)
	done := make(chan struct{})
	failures := make(chan string, 1)
	go func() {
		defer close(failures)
		for i := 0; i < 5000; i++ { // bounded; ends when the stop is done
			select {
			case <-done:
				return
			default:
			}
			if code, _ := get(hashed, path("hash", i%n), false); code != 200 {
				failures <- fmt.Sprintf("tile %d during the stop: %d", i%n, code)
				return
			}
		}
	}()
	replicas[0].stop(t)
	close(done)
	for f := range failures {
		t.Error(f)
	}
	for i := range n {
		if code, _ := get(hashed, path("hash", i), false); code != 200 {
			t.Fatalf("after a replica stopped, tile %d: %d", i, code)
		}
	}
	// Each tile that changed replica was fetched once more by its new
	// one; every other tile stayed a hit where it was.
	moved := minioGETs(t, mp.Endpoint) - before
	// Only the stopped replica's share moves: about a third of the tiles,
	// and certainly not all of them as a modulo hash would reshuffle.
	if moved == 0 || moved > n/2 {
		t.Errorf("a replica stopping moved %d of %d tiles; want about a third", moved, n)
	}
	t.Logf("one replica of three stopped: %d of %d tiles moved (%.0f%%)", moved, n, 100*float64(moved)/n)
}

// BenchmarkScaleOut prints, for 1, 2, 3 and 5 replicas behind HAProxy,
// the S3 GETs (counted by MinIO) and the hit ratio of one fixed request
// sequence, routed by a consistent hash of the path and by round robin.
// It measures counts, not time: run it once (bench/scale.sh does, with
// -benchtime 1x) against the test MinIO.
func BenchmarkScaleOut(b *testing.B) {
	b.StopTimer()
	mp := testenv.StartMinIO(b)
	env := mp.S3()
	bucket := env.Bucket(b)
	const tiles, requests = 400, 4000
	objs := map[string]testenv.Object{}
	for i := range tiles {
		objs[fmt.Sprintf("s/%d/%d/0.png", i/20, i%20)] = testenv.Object{Body: []byte(fmt.Sprintf("tile %d", i)), ContentType: "image/png"}
	}
	env.Put(b, bucket, objs)
	secret := strings.Repeat("b", 32)
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: time.Hour, Subject: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	// A fixed sequence, skewed as map traffic is (low zooms and the
	// centre are asked far more often): a Zipf draw over the tiles.
	seq := make([]int, requests)
	zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, tiles-1)
	for i := range seq {
		seq[i] = int(zipf.Uint64())
	}
	yaml := processYAML(secret, mp.Endpoint, fmt.Sprintf("tilesets: [{name: s, bucket: %s, prefix: s/}]\n", bucket))
	creds := minioCreds(mp.AccessKey, mp.SecretKey)
	for _, mode := range []struct{ name, balance string }{
		{"hash", "    balance uri path-only\n    hash-type consistent"},
		{"roundrobin", "    balance roundrobin"},
	} {
		for _, k := range []int{1, 2, 3, 5} {
			b.Run(fmt.Sprintf("%s/replicas=%d", mode.name, k), func(b *testing.B) {
				var replicas []*served
				for range k {
					replicas = append(replicas, serveProcess(b, yaml, creds...))
				}
				front := startHAProxy(b, mode.balance, replicas)
				before := minioGETs(b, mp.Endpoint)
				hits := 0
				for _, i := range seq {
					req, _ := http.NewRequest("GET", fmt.Sprintf("%s/tiles/s/%d/%d/0.png", front, i/20, i%20), nil)
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("status %d", resp.StatusCode)
					}
					if resp.Header.Get("X-Cache") == "HIT" {
						hits++
					}
				}
				gets := minioGETs(b, mp.Endpoint) - before
				b.ReportMetric(float64(gets), "s3_gets")
				b.ReportMetric(float64(hits)/requests, "hit_ratio")
				b.ReportMetric(float64(len(distinct(seq))), "distinct_tiles")
				for _, r := range replicas {
					r.stop(b)
				}
			})
		}
	}
}

func distinct(seq []int) map[int]bool {
	m := map[int]bool{}
	for _, i := range seq {
		m[i] = true
	}
	return m
}
