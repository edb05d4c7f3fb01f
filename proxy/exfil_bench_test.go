package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/store"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// BenchmarkExfil measures cache hits through the whole handler with a
// quota and sweep detection on, on the memory store and on a real Redis
// (TILEPROXY_TEST_REDIS_ADDR; bench/run.sh starts one), beside the same
// hits with them off, interleaved in one run. The principal re-reads a
// view of 256 tiles, so the sweep sketch sees distinct tiles and
// re-reads; the numbers are high enough that nothing is refused.
func BenchmarkExfil(b *testing.B) {
	withCache = true
	defer func() { withCache = false }()
	type variant struct {
		name  string
		store func() store.Store
	}
	vs := []variant{{name: "off"}, {name: "memory", store: func() store.Store { return store.NewMemory(time.Now) }}}
	if addr := os.Getenv("TILEPROXY_TEST_REDIS_ADDR"); addr != "" {
		vs = append(vs, variant{name: "redis", store: func() store.Store {
			st, err := store.NewRedis("redis://" + addr + "/2")
			if err != nil {
				b.Fatal(err)
			}
			return st
		}})
	}
	cfg := exfil.Config{
		Quotas: map[string]config.Quota{"a": {Tiles: 1 << 40, Per: config.Duration(time.Hour)}},
		Sweep:  config.Sweep{Distinct: 1 << 40, Per: config.Duration(time.Hour), Action: config.SweepBlock},
	}
	const view = 256
	var paths []string
	for i := range view {
		paths = append(paths, fmt.Sprintf("/tiles/a/8/%d/%d.png", i%16, i/16))
	}
	handlers := make([]http.Handler, len(vs))
	for i, v := range vs {
		fixtureExfil = nil
		if v.store != nil {
			st := v.store()
			l := exfil.New(cfg, exfil.Deps{Store: st, Now: time.Now, Metrics: nopExfilMetrics{}, Log: discardLogger()})
			go l.Run(b.Context())
			b.Cleanup(func() { l.Close(); st.Close() })
			fixtureExfil = l
		}
		f := newFixture(b, nil)
		f.p.log = discardLogger()
		f.p.access = accesslog.New(accesslog.JSON, discardWriter{})
		for _, p := range paths {
			f.mem.Put("tiles", strings.TrimPrefix(p, "/tiles/"), origintest.Object{Body: make([]byte, 4<<10), ContentType: "image/png"})
		}
		handlers[i] = f.p
	}
	fixtureExfil = nil
	tok := token(b, time.Hour, "a")
	reqs := make([]*http.Request, view)
	for i, p := range paths {
		reqs[i] = httptest.NewRequest("GET", p, nil)
		reqs[i].Header.Set("Authorization", "Bearer "+tok)
	}
	for i, h := range handlers { // fill each cache, and check each variant works
		for _, r := range reqs {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != 200 {
				b.Fatalf("%s: %d", vs[i].name, rec.Code)
			}
		}
	}
	w := &nopWriter{h: http.Header{}}
	next := make([]int, len(vs))
	ns := interleaved(len(vs), func(i int) {
		clear(w.h)
		handlers[i].ServeHTTP(w, reqs[next[i]%view])
		next[i]++
	})
	var out strings.Builder
	for i := 1; i < len(vs); i++ {
		m, lo, hi := ratio(ns, i, 0)
		name := vs[i].name + "/off"
		fmt.Fprintf(&out, "req/s quota+sweep %s %.3f (%.3f-%.3f)\n", name, m, lo, hi)
		b.ReportMetric(m, vs[i].name+"_per_off")
	}
	out.WriteString("ns/hit, best round:")
	for i, v := range vs {
		fmt.Fprintf(&out, " %s %.0f", v.name, slices.Min(ns[i]))
	}
	b.Logf("\n%s", out.String())
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
