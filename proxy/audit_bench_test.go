package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/internal/accesslog"
)

// BenchmarkAudit measures cache hits through the whole handler with the
// audit trail on beside the same hits with it off, interleaved in one
// run, and the audit writer alone in lines per second.
func BenchmarkAudit(b *testing.B) {
	withCache = true
	defer func() { withCache = false }()
	w, err := audit.Open(audit.Config{Path: filepath.Join(b.TempDir(), "audit.jsonl"), MaxBytes: 256 << 20, Keep: 2, Replica: "bench"},
		audit.Deps{Now: time.Now, Log: discardLogger(), Metrics: &atomicAuditCount{}})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var handlers []http.Handler
	for _, aw := range []*audit.Writer{nil, w} {
		fixtureAudit = aw
		f := newFixture(b, nil)
		f.p.log = discardLogger()
		f.p.access = accesslog.New(accesslog.JSON, discardWriter{})
		handlers = append(handlers, f.p)
	}
	fixtureAudit = nil
	req := httptest.NewRequest("GET", "/tiles/a/0/0/0.png", nil)
	req.Header.Set("Authorization", "Bearer "+token(b, time.Hour, "a"))
	for _, h := range handlers {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
	nw := &nopWriter{h: http.Header{}}
	ns := interleaved(2, func(i int) {
		clear(nw.h)
		handlers[i].ServeHTTP(nw, req)
	})
	m, lo, hi := ratio(ns, 1, 0)
	b.ReportMetric(m, "audit_per_off")
	// The same hits as a client gets them: over HTTP on loopback, one
	// keep-alive connection each, through the coalesce listener as
	// tileproxy serve's connections are.
	var urls []string
	for _, h := range handlers {
		srv := startHTTP(b, h, true)
		defer srv.Close()
		urls = append(urls, srv.URL+"/tiles/a/0/0/0.png")
	}
	clients := []*http.Client{{Transport: &http.Transport{}}, {Transport: &http.Transport{}}}
	auth := req.Header.Get("Authorization")
	nsHTTP := interleavedN(2, 200, func(i int) {
		r, _ := http.NewRequest("GET", urls[i], nil)
		r.Header.Set("Authorization", auth)
		resp, err := clients[i].Do(r)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("%v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
	mh, loh, hih := ratio(nsHTTP, 1, 0)
	b.ReportMetric(mh, "http_audit_per_off")
	// The writer alone: lines a second, one goroutine.
	l := &audit.Line{Time: time.Now(), Principal: "1255dacaa637f70cb606763d", Tileset: "city", Path: "14/8190/5447.png", Status: 200, Bytes: 4096, Cache: "HIT"}
	const n = 200_000
	start := time.Now()
	for range n {
		l.Seq = w.Next()
		if err := w.Record(l); err != nil {
			b.Fatal(err)
		}
	}
	perSec := n / time.Since(start).Seconds()
	b.ReportMetric(perSec, "lines/s")
	var out strings.Builder
	fmt.Fprintf(&out, "handler: req/s audit/off %.3f (%.3f-%.3f); ns/hit, best round: off %.0f audit %.0f\n", m, lo, hi, slices.Min(ns[0]), slices.Min(ns[1]))
	fmt.Fprintf(&out, "over HTTP: req/s audit/off %.3f (%.3f-%.3f); ns/hit, best round: off %.0f audit %.0f\n", mh, loh, hih, slices.Min(nsHTTP[0]), slices.Min(nsHTTP[1]))
	fmt.Fprintf(&out, "audit writer: %.0f lines/s\n", perSec)
	b.Logf("\n%s", out.String())
}

// atomicAuditCount counts lines as a Prometheus counter does: one atomic
// add (auditCounts' mutex and map would be the benchmark's own cost).
type atomicAuditCount struct{ n atomic.Int64 }

func (c *atomicAuditCount) AuditLine(string) { c.n.Add(1) }
