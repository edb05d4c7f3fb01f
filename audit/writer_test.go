package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type countMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countMetrics) AuditLine(r string) { m.mu.Lock(); m.n[r]++; m.mu.Unlock() }

func newWriter(t *testing.T, dir string, maxBytes int64, rotated func(string)) *Writer {
	w, err := Open(Config{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: maxBytes, Keep: 3, Replica: "r1"},
		Deps{Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: &countMetrics{n: map[string]int{}}, Rotated: rotated})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func line(i int) *Line {
	return &Line{Time: time.Date(2026, 12, 4, 10, 0, 0, i*int(time.Millisecond), time.UTC), Seq: uint64(i),
		Principal: "abc123", Tileset: "city", Path: fmt.Sprintf("14/%d/5447.png", i), Status: 200, Bytes: 4096, Cache: "HIT"}
}

// readLines reads every JSON line of the files.
func readLines(t *testing.T, files ...string) []map[string]any {
	var out []map[string]any
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %q: %v", f, sc.Text(), err)
			}
			out = append(out, m)
		}
		fh.Close()
	}
	return out
}

// TestCrashLosesNoLine: lines written and never closed (the process
// killed) are all in the file the next Open recovers, cut at the last
// whole line.
func TestCrashLosesNoLine(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, dir, 1<<20, nil)
	for i := range 500 {
		if err := w.Record(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	// No Close: as after kill -9, the mapping's pages are all there is.
	w2 := newWriter(t, dir, 1<<20, nil)
	defer w2.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "audit-r1-*.jsonl"))
	if len(files) != 1 || !strings.Contains(files[0], "20261204T100000.000Z-20261204T100000.499Z") {
		t.Fatalf("recovered %v", files)
	}
	lines := readLines(t, files...)
	if len(lines) != 500 || !strings.HasSuffix(lines[499]["id"].(string), "-dv") {
		t.Fatalf("%d lines recovered, last %v", len(lines), lines[len(lines)-1])
	}
}

// TestRotation: the file rotates before a line would pass max_bytes,
// every line lands once, and Keep files stay.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var shipped []string
	w := newWriter(t, dir, 1<<20, func(p string) { mu.Lock(); shipped = append(shipped, p); mu.Unlock() })
	const n = 12_000 // about 2.4 MiB of lines
	for i := range n {
		if err := w.Record(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Rotate(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(shipped) < 3 {
		t.Fatalf("%d rotations for %d lines of ~200 bytes in 1 MiB files", len(shipped), n)
	}
	total := 0
	for _, f := range shipped {
		fi, _ := os.Stat(f)
		if fi.Size() > 1<<20 {
			t.Errorf("%s is %d bytes", f, fi.Size())
		}
		total += len(readLines(t, f))
	}
	if total != n {
		t.Errorf("%d lines in the rotated files, want %d", total, n)
	}
}

// TestKeep: without a shipper, Keep rotated files stay.
func TestKeep(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, dir, 1<<20, nil)
	for i := range 6 {
		w.Record(line(i))
		w.Rotate()
	}
	w.Close()
	if files, _ := filepath.Glob(filepath.Join(dir, "audit-r1-*.jsonl")); len(files) != 3 {
		t.Errorf("%d files kept, want 3", len(files))
	}
}

// TestConcurrentRecords: lines from many goroutines are whole (-race).
func TestConcurrentRecords(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var files []string
	w := newWriter(t, dir, 1<<20, func(p string) { mu.Lock(); files = append(files, p); mu.Unlock() })
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				w.Record(line(g*10000 + i))
			}
		}()
	}
	wg.Wait()
	w.Rotate()
	w.Close()
	if n := len(readLines(t, files...)); n != 12000 {
		t.Errorf("%d lines, want 12000", n)
	}
}
