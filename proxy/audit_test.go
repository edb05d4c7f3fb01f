package proxy

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/audit"
)

type auditCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *auditCounts) AuditLine(r string) { c.mu.Lock(); c.n[r]++; c.mu.Unlock() }

// auditFixture is a fixture whose proxy audits into dir; rotated files
// are collected.
func auditFixture(t *testing.T, maxBytes int64) (*fixture, *audit.Writer, func() []map[string]any) {
	dir := t.TempDir()
	var mu sync.Mutex
	var files []string
	w, err := audit.Open(audit.Config{Path: filepath.Join(dir, "audit.jsonl"), MaxBytes: maxBytes, Keep: 10, Replica: "r1"},
		audit.Deps{Now: time.Now, Log: discardLogger(), Metrics: &auditCounts{n: map[string]int{}},
			Rotated: func(p string) { mu.Lock(); files = append(files, p); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	fixtureAudit = w
	defer func() { fixtureAudit = nil }()
	f := newFixture(t, nil)
	read := func() []map[string]any {
		if err := w.Rotate(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		var out []map[string]any
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(strings.NewReader(string(data)))
			for sc.Scan() {
				var m map[string]any
				if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
					t.Fatalf("%q: %v", sc.Text(), err)
				}
				m["raw"] = sc.Text()
				out = append(out, m)
			}
		}
		files = nil
		return out
	}
	return f, w, read
}

// TestAuditLines: every tile answer and every denial on a tile route,
// TileJSON included, has its line; a token never does, wherever it was
// put.
func TestAuditLines(t *testing.T) {
	f, _, read := auditFixture(t, 1<<20)
	tok := token(t, time.Hour, "a")
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	hit := f.do("GET", "/tiles/a/0/0/0.png", bearer)
	cases := []struct {
		method, target string
		hdr            map[string]string
		status         int
		reason         string
	}{
		{"GET", "/tiles/a/0/0/0.png", bearer, 200, ""},
		{"GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + tok, "If-None-Match": hit.Header().Get("Etag")}, 304, ""},
		{"HEAD", "/tiles/a/0/0/0.png", bearer, 200, ""},
		{"GET", "/tiles/a/0/0/0.png?access_token=" + tok, nil, 200, ""},
		{"GET", "/tiles/a/0/0/0.png", map[string]string{"Cookie": "__Host-tileproxy_token=" + tok}, 200, ""},
		{"GET", "/tiles/a/" + tok + "/0.png", bearer, 404, ""},
		{"GET", "/tiles/a/0/0/0.png", map[string]string{"Authorization": "Bearer " + tok + "x"}, 401, "bad_signature"},
		{"GET", "/tiles/a/0/0/0.png", nil, 401, "no_token"},
		{"GET", "/tiles/b/0/0/0.png", bearer, 403, "not_granted"},
		{"GET", "/tiles/a.json", bearer, 200, ""},
	}
	for _, c := range cases {
		if rec := f.do(c.method, c.target, c.hdr); rec.Code != c.status {
			t.Fatalf("%s %s: %d, want %d", c.method, c.target[:min(len(c.target), 30)], rec.Code, c.status)
		}
	}
	f.do("GET", "/healthz", nil) // not a tile route: no line
	lines := read()
	if len(lines) != 1+len(cases) {
		t.Fatalf("%d lines for %d tile answers", len(lines), 1+len(cases))
	}
	for i, c := range cases {
		l := lines[i+1]
		if int(l["status"].(float64)) != c.status || (c.reason != "" && l["reason"] != c.reason) {
			t.Errorf("%s %s: line %v", c.method, c.target[:min(len(c.target), 30)], l["raw"])
		}
		if strings.Contains(l["raw"].(string), tok[:40]) || strings.Contains(l["raw"].(string), "eyJ") {
			t.Errorf("a token in line %s", l["raw"])
		}
	}
	first := lines[0]
	if first["tileset"] != "a" || first["path"] != "0/0/0.png" || first["bytes"] != 9.0 || first["replica"] != "r1" || first["principal"] == "" || first["id"] == "" {
		t.Errorf("a hit's line: %v", first["raw"])
	}
	if _, ok := first["sub"]; ok {
		t.Error("subjects: hash wrote the subject")
	}
	if lines[2]["bytes"] != 0.0 || lines[3]["bytes"] != 0.0 {
		t.Errorf("304 and HEAD carry no bytes: %v %v", lines[2]["raw"], lines[3]["raw"])
	}
	if lines[len(lines)-1]["path"] != "a.json" {
		t.Errorf("TileJSON's line: %v", lines[len(lines)-1]["raw"])
	}
}

// TestNoLineNoAnswer: when a line cannot be written (here: the trail's
// directory is gone when the file must rotate), the answer is not sent
// (503), and /readyz says why.
func TestNoLineNoAnswer(t *testing.T) {
	f, w, _ := auditFixture(t, 4096) // one page: a rotation every twenty lines or so
	os.RemoveAll(filepath.Dir(w.Path()))
	bearer := map[string]string{"Authorization": "Bearer " + token(t, time.Hour, "a")}
	for i := range 100 {
		rec := f.do("GET", "/tiles/a/0/0/0.png", bearer)
		if rec.Code == 200 {
			continue // still room in the mapped file
		}
		if rec.Code != 503 || strings.Contains(rec.Body.String(), "PNG") || rec.Header().Get("Etag") != "" {
			t.Fatalf("request %d, unaudited answer: %d %q %v", i, rec.Code, rec.Body.String(), rec.Header())
		}
		if ready := f.do("GET", "/readyz", nil); ready.Code != 503 || !strings.Contains(ready.Body.String(), "audit") {
			t.Errorf("/readyz: %d %q", ready.Code, ready.Body.String())
		}
		return
	}
	t.Fatal("100 answers with the trail's directory gone, none refused")
}
