package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
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
	yaml := fmt.Sprintf(`listen: "127.0.0.1:0"
metrics_listen: ""
readiness_grace: 0s
log: {format: text, level: info, access: false}
auth: {hmac_secret: %q}
s3: {endpoint: %q, use_path_style: true}
audit: {path: %q, max_bytes: 64MiB, keep: 5, replica: kill9}
tilesets:
  - {name: k, bucket: %s, prefix: k/, missing: empty}
`, secret, mp.Endpoint, filepath.Join(dir, "audit.jsonl"), bucket)
	s := serveProcess(t, yaml, "AWS_ACCESS_KEY_ID="+mp.AccessKey, "AWS_SECRET_ACCESS_KEY="+mp.SecretKey, "AWS_REGION=us-east-1")
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
