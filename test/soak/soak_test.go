package soak

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
)

const (
	maxBytes  = 64 << 20
	objects   = 330 // 1 MiB each: over 5x the cache
	hotSet    = 40
	workers   = 8
	secretHex = "soak-secret-0123456789abcdef0123456789"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// memfdBytes is the memory of pid's memory files (the cache keeps large
// bodies in one), which VmRSS does not show: they are not mapped.
func memfdBytes(pid int) (int64, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, fd := range fds {
		p := filepath.Join(dir, fd.Name())
		if target, err := os.Readlink(p); err != nil || !strings.HasPrefix(target, "/memfd:") {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			continue // closed meanwhile
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
	}
	return total, nil
}

func rssBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

var goroutinesRE = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func goroutines(t *testing.T, metrics string) int {
	t.Helper()
	m := goroutinesRE.FindStringSubmatch(scrape(t, metrics))
	if m == nil {
		t.Fatal("no go_goroutines in /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestBoundedMemorySoak runs the real binary for a bounded time
// (TILEPROXY_SOAK, default 60 s) with many distinct keys through a 64 MiB
// cache, and holds it to RSS plus the cache's memory file <= 1.3 x max_bytes
// + 50 MiB, every body byte-for-byte what was uploaded, a flat goroutine
// count, every answer 200, and no secret in logs or metrics.
func TestBoundedMemorySoak(t *testing.T) {
	env := testenv.MinIO(t)
	duration := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TILEPROXY_SOAK")); err == nil {
		duration = d
	}
	bucket := env.Bucket(t)
	objs := map[string]testenv.Object{}
	var sums [objects][sha256.Size]byte // every answer is checked against these
	for i := range objects {
		b := make([]byte, 1<<20)
		rand.Read(b)
		objs[fmt.Sprintf("soak/%d.bin", i)] = testenv.Object{Body: b}
		sums[i] = sha256.Sum256(b)
	}
	env.Put(t, bucket, objs)
	objs = nil

	dir := t.TempDir()
	bin := filepath.Join(dir, "tileproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/tileproxy").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	listen, metricsAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "tileproxy.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
listen: %q
metrics_listen: %q
public_url: "http://%s"
drain_delay: 0s
log: {format: json, level: info, access: true}
auth: {hmac_secret: "${SOAK_SECRET}"}
s3: {endpoint: %q, use_path_style: true}
cache: {max_bytes: 64MiB, max_object_bytes: 2MiB, ttl: 1h}
tilesets: [{name: soak, bucket: %q, prefix: soak/}]
`, listen, metricsAddr, listen, env.Endpoint, bucket)), 0o600)
	logFile := filepath.Join(dir, "tileproxy.log")
	logs, _ := os.Create(logFile)
	defer logs.Close()
	cmd := exec.Command(bin, "serve", "-config", cfg)
	cmd.Env = append(os.Environ(), "SOAK_SECRET="+secretHex, "AWS_ACCESS_KEY_ID="+env.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+env.SecretKey, "AWS_REGION=us-east-1", "GOMEMLIMIT=")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	base, metrics := "http://"+listen, "http://"+metricsAddr+"/metrics"
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("tileproxy not ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, _ := auth.MintHMAC(auth.MintOptions{Secret: []byte(secretHex), Tilesets: []string{"soak"}, TTL: time.Hour, Subject: "soak"})

	// End well before go test's -timeout would kill the run: a soak that
	// asks for longer than the test binary may live is cut short, and says
	// so, instead of dying with "panic: test timed out".
	if deadline, ok := t.Deadline(); ok {
		if left := time.Until(deadline) - 2*time.Minute; left < duration {
			t.Logf("TILEPROXY_SOAK=%v does not fit in go test's -timeout: soaking for %v", duration, left.Round(time.Second))
			duration = max(left, 10*time.Second)
		}
	}
	// Warm up, then take the goroutine baseline under the same load shape.
	ctx, stop := context.WithTimeout(context.Background(), duration)
	defer stop()
	var requests, failures, bytesIn atomic.Int64
	var (
		failMu sync.Mutex // protects failed
		failed []string
	)
	var peak atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				k := rng.IntN(hotSet)
				if rng.IntN(10) < 3 {
					k = rng.IntN(objects)
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/tiles/soak/%d.bin", base, k), nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failures.Add(1)
						failMu.Lock()
						failed = append(failed, err.Error())
						failMu.Unlock()
					}
					continue
				}
				h := sha256.New()
				n, cerr := io.Copy(h, resp.Body)
				resp.Body.Close()
				if ctx.Err() != nil && cerr != nil {
					continue // cut off by the soak's own deadline, not a failure
				}
				requests.Add(1)
				bytesIn.Add(n)
				if resp.StatusCode != 200 || n != 1<<20 || !bytes.Equal(h.Sum(nil), sums[k][:]) {
					failures.Add(1)
					failMu.Lock()
					failed = append(failed, fmt.Sprintf("%d/%d bytes of %d.bin, content intact %v (%v)",
						resp.StatusCode, n, k, bytes.Equal(h.Sum(nil), sums[k][:]), cerr))
					failMu.Unlock()
				}
			}
		}()
	}
	sampler := time.NewTicker(250 * time.Millisecond)
	defer sampler.Stop()
	var baseline int
	var peakFile int64 // of the cache's memory file, counted in peak
	start := time.Now()
sample:
	for {
		select {
		case <-ctx.Done():
			break sample
		case <-sampler.C:
			rss, err := rssBytes(cmd.Process.Pid)
			if err != nil {
				t.Fatalf("tileproxy died: %v", err)
			}
			file, err := memfdBytes(cmd.Process.Pid)
			if err != nil {
				t.Fatalf("tileproxy died: %v", err)
			}
			rss += file
			peakFile = max(peakFile, file)
			if rss > peak.Load() {
				peak.Store(rss)
			}
			if baseline == 0 && time.Since(start) > duration/4 {
				baseline = goroutines(t, metrics)
			}
		}
	}
	wg.Wait()
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second) // idle client connections close on their own

	limit := int64(maxBytes)*13/10 + 50<<20
	after := goroutines(t, metrics)
	t.Logf("soak %v: %d requests, %.0f MiB served, %d failures; peak RSS + memory file %.1f MiB (limit %.1f MiB; the file alone peaked at %.1f MiB); goroutines %d under load, %d after",
		duration, requests.Load(), float64(bytesIn.Load())/(1<<20), failures.Load(),
		float64(peak.Load())/(1<<20), float64(limit)/(1<<20), float64(peakFile)/(1<<20), baseline, after)
	if peakFile == 0 && runtime.GOOS == "linux" {
		t.Error("no memory file seen: the cache should keep 1 MiB bodies in one on Linux")
	}
	if peak.Load() > limit {
		t.Errorf("peak RSS + memory file %.1f MiB over the limit %.1f MiB", float64(peak.Load())/(1<<20), float64(limit)/(1<<20))
	}
	if failures.Load() > 0 {
		t.Errorf("%d requests failed: %v", failures.Load(), failed)
	}
	if requests.Load() < int64(objects) {
		t.Errorf("only %d requests: the soak did not push enough data", requests.Load())
	}
	if after > baseline+5 {
		t.Errorf("goroutines grew from %d under load to %d after it: a leak", baseline, after)
	}
	body := scrape(t, metrics)
	logged, _ := os.ReadFile(logFile)
	for _, secret := range []string{tok, secretHex, env.SecretKey} {
		if bytes.Contains(logged, []byte(secret)) || strings.Contains(body, secret) {
			t.Error("a token or secret appears in the logs or /metrics")
		}
	}
	if !bytes.Contains(logged, []byte(`"msg":"request"`)) {
		t.Error("no access lines were logged: the secret check saw nothing")
	}
}
