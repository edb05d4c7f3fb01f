package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/gzip"

	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

// TestAuditSurvivesKill9: a client records every answer it receives
// while the serving process is killed with SIGKILL mid-load; the audit
// file then holds a line for every one of them.
func TestAuditSurvivesKill9(t *testing.T) {
	mp := testenv.MinIO(t)
	bucket := mp.Bucket(t)
	mp.Put(t, bucket, map[string]testenv.Object{"k/0/0/0.png": {Body: []byte("tile"), ContentType: "image/png"}})
	dir := t.TempDir()
	secret := strings.Repeat("k", 32)
	yaml := processYAML(secret, mp.Endpoint, fmt.Sprintf(`audit: {path: %q, max_bytes: 64MiB, keep: 5, replica: kill9}
tilesets:
  - {name: k, bucket: %s, prefix: k/, missing: empty}
`, filepath.Join(dir, "audit.jsonl"), bucket))
	s := serveProcess(t, yaml, minioCreds(mp.AccessKey, mp.SecretKey)...)
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: []string{"*"}, TTL: time.Hour, Subject: "loader"})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	answered := map[string]int{} // path -> status, for every answer received
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 100_000; i++ { // bounded; the kill ends it long before
				select {
				case <-stop:
					return
				default:
				}
				// Every path distinct, so that each answer has its own
				// line to find: 204 (missing: empty) after an S3 GET.
				path := fmt.Sprintf("9/%d/%d.png", w, i)
				req, _ := http.NewRequest("GET", s.base+"/tiles/k/"+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := c.Do(req)
				if err != nil {
					return // the process is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				answered[path] = resp.StatusCode
				mu.Unlock()
			}
		}()
	}
	// Let the load run, then kill without warning.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n >= 2000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.waited
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(answered) < 500 {
		t.Fatalf("only %d answers before the kill", len(answered))
	}
	// The active file as the kill left it: lines up to the first NUL.
	data, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	recorded := map[string]int{} // path -> status
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	for i, line := range lines {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var l struct {
			Path   string `json:"path"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			if i == len(lines)-1 {
				continue // being copied at the kill: its answer was never sent
			}
			t.Fatalf("a broken line %q", line)
		}
		recorded[l.Path] = l.Status
	}
	missing := 0
	for path, status := range answered {
		if got, ok := recorded[path]; !ok || got != status {
			missing++
			if missing < 5 {
				t.Errorf("answer %s %d: line %v %d", path, status, ok, got)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d answers received have no line", missing, len(answered))
	}
	t.Logf("%d answers received before SIGKILL, %d lines recorded", len(answered), len(recorded))
}

// TestAuditCommand: the command reads plain and gzip'd files of a
// directory and answers both questions; bad arguments get a short error.
func TestAuditCommand(t *testing.T) {
	dir := t.TempDir()
	lines := `{"time":"2026-12-01T10:00:00.000Z","replica":"r1","id":"a-1","principal":"p1","tileset":"city","path":"14/8190/5447.png","status":200,"bytes":9,"cache":"HIT"}
{"time":"2026-12-01T10:00:01.000Z","replica":"r1","id":"a-2","principal":"p2","tileset":"city","path":"14/8190/5447.png","status":403,"bytes":0,"reason":"outside_grant"}
`
	os.WriteFile(filepath.Join(dir, "audit-r1-a.jsonl"), []byte(lines), 0o600)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(lines, "r1", "r2"), "10:00:0", "11:00:0")))
	zw.Close()
	os.WriteFile(filepath.Join(dir, "audit-r2-b.jsonl.gz"), gz.Bytes(), 0o600)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-tile", "city/14/8190/5447"}, []string{"4 answers", "2026-12-01T11:00:00.000Z  r2", "p2  403 outside_grant"}},
		{[]string{"-principal", "p1"}, []string{"principal p1: 2 answers", "zoom 14: 2 tiles", "first 2026-12-01T10:00:00.000Z, last 2026-12-01T11:00:00.000Z"}},
		{[]string{"-principal", "p2", "-since", "2026-12-01T10:30:00Z"}, []string{"1 answers", "denied outside_grant: 1"}},
		{[]string{"-tileset", "city"}, []string{"2 principals", "p1: 2 tiles"}},
	} {
		var out, errb bytes.Buffer
		if rc := run(append([]string{"audit", "-dir", dir}, tc.args...), &out, &errb); rc != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, rc, errb.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: no %q in\n%s", tc.args, w, out.String())
			}
		}
	}
	for _, args := range [][]string{{"-tile", "city/14/8190"}, {"-principal", "p", "-tile", "c/1/0/0"}, {"-tileset", "c", "-since", "yesterday"}, {"-dir", t.TempDir(), "-tileset", "c"}} {
		var out, errb bytes.Buffer
		if rc := run(append([]string{"audit", "-dir", dir}, args...), &out, &errb); rc != 1 || !strings.HasPrefix(errb.String(), "tileproxy: audit: ") {
			t.Errorf("%v: exit %d %q", args, rc, errb.String())
		}
	}
}

// TestShipOnMinIO: a rotated file is uploaded with Content-MD5, verified,
// and matches the local file byte for byte before the local copy goes; a
// file a crash left is shipped at the next start.
func TestShipOnMinIO(t *testing.T) {
	mp := testenv.MinIO(t)
	bucket := mp.Bucket(t)
	cfg := config.Default()
	cfg.S3.Endpoint, cfg.S3.UsePathStyle = mp.Endpoint, true
	t.Setenv("AWS_ACCESS_KEY_ID", mp.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mp.SecretKey)
	up, err := origin.New(t.Context(), &cfg, origin.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ship := audit.NewShipper(bucket, "trail/", up, log, nopShipMetrics{})
	dir := t.TempDir()
	acfg := audit.Config{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: 1 << 20, Keep: 3, Replica: "r9"}
	var rotated []string
	w, err := audit.Open(acfg, audit.Deps{Now: time.Now, Log: log, Metrics: nopShipMetrics{}, Rotated: func(p string) { rotated = append(rotated, p) }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		w.Record(&audit.Line{Time: time.Now(), Seq: uint64(i), Principal: "p", Tileset: "city", Path: fmt.Sprintf("14/%d/1.png", i), Status: 200, Bytes: 10})
	}
	if err := w.Rotate(); err != nil || len(rotated) != 1 {
		t.Fatalf("rotate: %v %v", err, rotated)
	}
	local, err := os.ReadFile(rotated[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := ship.Ship(t.Context(), rotated[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rotated[0]); !os.IsNotExist(err) {
		t.Errorf("the local copy is still there after shipping: %v", err)
	}
	got := getObject(t, mp, bucket, ship.Key(rotated[0]))
	if !bytes.Equal(got, local) {
		t.Fatalf("shipped %d bytes, the local file had %d", len(got), len(local))
	}
	if k := ship.Key(rotated[0]); !strings.HasPrefix(k, "trail/audit-r9-") {
		t.Errorf("key %q does not name the replica", k)
	}

	// A crash: lines written, the process gone before any rotation.
	for i := range 50 {
		w.Record(&audit.Line{Time: time.Now(), Seq: uint64(1000 + i), Principal: "p", Tileset: "city", Path: "0/0/0.png", Status: 200})
	}
	// The next start recovers the file and ships it.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go ship.Run(ctx)
	w2, err := audit.Open(acfg, audit.Deps{Now: time.Now, Log: log, Metrics: nopShipMetrics{}, Rotated: ship.Enqueue})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	for i := 0; ship.Pending() > 0 || i == 0; i++ {
		if i == 500 {
			t.Fatal("the file a crash left was not shipped at the next start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "audit-r9-*.jsonl"))
	if len(left) != 0 {
		t.Fatalf("left after shipping: %v", left)
	}
	keys := listKeys(t, mp, bucket, "trail/")
	if len(keys) != 2 {
		t.Fatalf("keys %v, want the rotated file and the recovered one", keys)
	}
	if n := bytes.Count(getObject(t, mp, bucket, keys[1]), []byte("\n")); n != 50 {
		t.Errorf("the recovered file shipped %d lines, want 50", n)
	}
}

type nopShipMetrics struct{}

func (nopShipMetrics) AuditShipped(string) {}
func (nopShipMetrics) AuditLine(string)    {}

func getObject(t *testing.T, mp *testenv.S3, bucket, key string) []byte {
	t.Helper()
	out, err := mp.Client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func listKeys(t *testing.T, mp *testenv.S3, bucket, prefix string) []string {
	t.Helper()
	out, err := mp.Client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	slices.Sort(keys)
	return keys
}
