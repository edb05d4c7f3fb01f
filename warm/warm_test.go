package warm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/origin/origintest"
	"github.com/tileproxy/tileproxy/proxy/core"
)

type fixture struct {
	core  *core.Core
	mem   *origintest.Memory
	cache *cache.Cache
	reg   *prometheus.Registry
	m     *metrics.Metrics
	logs  *testenv.SyncBuffer
	deps  Deps
}

func newFixture(t *testing.T, bounds []float64) *fixture {
	t.Helper()
	if bounds == nil {
		bounds = []float64{-180, -85.0511, 180, 85.0511}
	}
	cfg := config.Default()
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/", Format: "png", Missing: config.MissingNotFound, MaxZoom: 5, Bounds: bounds}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &fixture{mem: origintest.NewMemory(), cache: c, reg: prometheus.NewRegistry(), logs: &testenv.SyncBuffer{}}
	if f.m, err = metrics.New(f.reg, metrics.Build{}); err != nil {
		t.Fatal(err)
	}
	if f.core, err = core.New(&cfg, core.Deps{Fetcher: f.mem, Cache: c, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	f.deps = Deps{Logger: slog.New(slog.NewTextHandler(f.logs, nil)), Metrics: f.m}
	return f
}

func (f *fixture) warmed(t *testing.T, result string) int {
	t.Helper()
	return int(testutil.ToFloat64(mustVec(t, f.reg, "tileproxy_cache_warm_tiles_total", result)))
}

// mustVec finds the counter child named and labelled so in reg.
func mustVec(t *testing.T, reg *prometheus.Registry, name, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no %s{result=%q}", name, result)
	return nil
}

// TestZoomRange warms z0-2 of a world tileset whose origin has some of
// the tiles: each is fetched once into the cache, the rest remembered
// missing, and progress shows in the metrics and the log.
func TestZoomRange(t *testing.T) {
	f := newFixture(t, nil)
	have := 0
	for z := range 3 {
		for x := range 1 << z {
			for y := range 1 << z {
				if (x+y)%2 == 0 {
					f.mem.Put("tiles", fmt.Sprintf("a/%d/%d/%d.png", z, x, y), origintest.Object{Body: []byte(fmt.Sprint(z, x, y)), ContentType: "image/png"})
					have++
				}
			}
		}
	}
	p, err := NewPlan(t.Context(), config.Warm{Tiles: []config.WarmTiles{{Tileset: "a", Zoom: "0-2"}}}, f.core, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 21 {
		t.Fatalf("z0-2 of the world: %d tiles, want 21", p.Total)
	}
	s := p.Run(t.Context(), f.core, 3, f.deps)
	if s.Err != nil || s.Cached != have || s.Missing != 21-have || s.Failed != 0 {
		t.Fatalf("summary %+v, want %d cached, %d missing", s, have, 21-have)
	}
	if n := f.mem.Calls.Load(); n != 21 {
		t.Errorf("%d origin requests for 21 tiles", n)
	}
	if f.cache.Len() != 21 { // the missing ones as remembered misses
		t.Errorf("%d cache entries, want 21", f.cache.Len())
	}
	res, err := f.core.Get(t.Context(), core.Request{Tileset: "a", Path: "2/1/1.png"})
	if err != nil || res.Cache != "HIT" {
		t.Fatalf("a warmed tile: %v %q, want a hit", err, res.Cache)
	}
	res.Release()
	if got := testutil.ToFloat64(gauge(t, f.reg, "tileproxy_cache_warm_planned_tiles")); got != 21 {
		t.Errorf("planned gauge %v", got)
	}
	if f.warmed(t, "cached") != have || f.warmed(t, "missing") != 21-have || f.warmed(t, "failed") != 0 {
		t.Errorf("metrics: cached %d missing %d failed %d", f.warmed(t, "cached"), f.warmed(t, "missing"), f.warmed(t, "failed"))
	}
	logs := f.logs.String()
	for _, want := range []string{"cache warm started", "tiles=21", "cache warm progress", "cache warm done"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// TestPlanCounts: zoom ranges are clipped to the tileset's zooms and
// bounds (across the antimeridian too), keys files skip blanks and
// comments, and a plan over config.MaxWarmTiles is refused.
func TestPlanCounts(t *testing.T) {
	keys := "# hot tiles\n\n0/0/0.png\n/1/1/1.png\n  2/3/1.png  \n"
	for _, tc := range []struct {
		name   string
		bounds []float64
		tiles  []config.WarmTiles
		want   int
		paths  []string
		err    error
	}{
		{"world z3", nil, []config.WarmTiles{{Tileset: "a", Zoom: "3"}}, 64, nil, nil},
		{"clipped to maxzoom 5", nil, []config.WarmTiles{{Tileset: "a", Zoom: "5-9"}}, 1024, nil, nil},
		{"north-east quarter z2", []float64{0.1, 0.1, 179, 85}, []config.WarmTiles{{Tileset: "a", Zoom: "2"}}, 4, []string{"2/2/0.png", "2/3/0.png", "2/2/1.png", "2/3/1.png"}, nil},
		{"keys", nil, []config.WarmTiles{{Tileset: "a", Keys: "hot.txt"}}, 3, []string{"0/0/0.png", "1/1/1.png", "2/3/1.png"}, nil},
		{"both, in order", nil, []config.WarmTiles{{Tileset: "a", Keys: "hot.txt"}, {Tileset: "a", Zoom: "0"}}, 4, []string{"0/0/0.png", "1/1/1.png", "2/3/1.png", "0/0/0.png"}, nil},
		{"missing keys file", nil, []config.WarmTiles{{Tileset: "a", Keys: "gone.txt"}}, 0, nil, errMissingFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.bounds)
			f.deps.Open = func(name string) (io.ReadCloser, error) {
				if name != "hot.txt" {
					return nil, errMissingFile
				}
				return io.NopCloser(strings.NewReader(keys)), nil
			}
			p, err := NewPlan(t.Context(), config.Warm{Tiles: tc.tiles}, f.core, f.deps)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if p.Total != tc.want {
				t.Fatalf("%d tiles, want %d", p.Total, tc.want)
			}
			var paths []string
			for _, pt := range p.parts {
				pt.each(func(p string) bool { paths = append(paths, p); return true })
			}
			if len(paths) != tc.want {
				t.Fatalf("%d paths made, plan says %d", len(paths), tc.want)
			}
			if tc.paths != nil && fmt.Sprint(paths) != fmt.Sprint(tc.paths) {
				t.Fatalf("paths %v, want %v", paths, tc.paths)
			}
		})
	}
	// The world at z0-14 is 358 million tiles: refused, as a mistake.
	cfg := config.Default()
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/", Format: "png", MaxZoom: 14, Missing: config.MissingNotFound, Bounds: []float64{-180, -85.0511, 180, 85.0511}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := core.New(&cfg, core.Deps{Fetcher: origintest.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewPlan(t.Context(), config.Warm{Tiles: []config.WarmTiles{{Tileset: "a", Zoom: "0-14"}}}, c, Deps{}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("z0-14 of the world: %v, want ErrTooMany", err)
	}
}

var errMissingFile = errors.New("no such file")

// TestOriginDown: with every fetch failing the warm stops after
// maxFailuresInARow tiles instead of trying all of them, and says why.
func TestOriginDown(t *testing.T) {
	f := newFixture(t, nil)
	f.mem.Err = &origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject", Code: "ServiceUnavailable"}
	p, err := NewPlan(t.Context(), config.Warm{Tiles: []config.WarmTiles{{Tileset: "a", Zoom: "0-5"}}}, f.core, f.deps)
	if err != nil {
		t.Fatal(err)
	}
	s := p.Run(t.Context(), f.core, 4, f.deps)
	if !errors.Is(s.Err, ErrFailing) || s.Failed < maxFailuresInARow || s.Failed > maxFailuresInARow+4 || s.Cached != 0 {
		t.Fatalf("summary %+v: want a stop after %d failures", s, maxFailuresInARow)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "cache warm stopped: the origin kept failing") || !strings.Contains(logs, "last_error") {
		t.Errorf("log:\n%s", logs)
	}
}

// fakeGetter answers from a function and tracks concurrency. With
// gateAt set, the first calls wait until gateAt of them are in flight, so
// a test sees the warm reach its concurrency without timing anything.
type fakeGetter struct {
	tilejson  string
	get       func(req core.Request) error
	gateAt    int64
	gateOnce  sync.Once
	gate      chan struct{}
	inFlight  atomic.Int64
	peak      atomic.Int64
	mu        sync.Mutex
	requested []string
}

func (g *fakeGetter) Get(ctx context.Context, req core.Request) (core.Result, error) {
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	g.mu.Lock()
	g.requested = append(g.requested, req.Path)
	g.mu.Unlock()
	if g.gateAt > 0 {
		if n >= g.gateAt {
			g.gateOnce.Do(func() { close(g.gate) })
		}
		select {
		case <-g.gate:
		case <-ctx.Done():
		}
	}
	return core.Result{Status: core.StatusOK}, g.get(req)
}

func (g *fakeGetter) TileJSON(context.Context, string) ([]byte, string, error) {
	if g.tilejson != "" {
		return []byte(g.tilejson), "", nil
	}
	return []byte(`{"tiles":["http://x/tiles/a/{z}/{x}/{y}.pbf"],"minzoom":0,"maxzoom":10,"bounds":[-180,-85,180,85]}`), "", nil
}

// TestBoundedAndBusy: never more than the concurrency asked at once; a
// tile the origin is too busy for is tried again after a wait, up to
// busyTries times; cancelling stops the warm.
func TestBoundedAndBusy(t *testing.T) {
	var busy sync.Map
	g := &fakeGetter{gateAt: 3, gate: make(chan struct{}), get: func(req core.Request) error {
		if req.Path == "2/1/1.pbf" {
			if n, _ := busy.LoadOrStore(req.Path, new(atomic.Int64)); n.(*atomic.Int64).Add(1) < 3 {
				return origin.ErrSaturated
			}
		}
		if req.Path == "2/2/2.pbf" {
			return origin.ErrSaturated // always
		}
		return nil
	}}
	var waits atomic.Int64
	deps := Deps{Sleep: func(context.Context, time.Duration) { waits.Add(1) }}
	p, err := NewPlan(t.Context(), config.Warm{Tiles: []config.WarmTiles{{Tileset: "a", Zoom: "0-4"}}}, g, deps)
	if err != nil {
		t.Fatal(err)
	}
	s := p.Run(t.Context(), g, 3, deps)
	if s.Err != nil || s.Cached != p.Total-1 || s.Failed != 1 {
		t.Fatalf("summary %+v of %d", s, p.Total)
	}
	if peak := g.peak.Load(); peak != 3 {
		t.Errorf("peak concurrency %d, want 3", peak)
	}
	if w := waits.Load(); w != 2+busyTries-1 {
		t.Errorf("%d waits, want 2 for the tile busy twice and %d for the one always busy", w, busyTries-1)
	}
	ctx, cancel := context.WithCancel(t.Context())
	g2 := &fakeGetter{get: func(core.Request) error { cancel(); return nil }}
	s = p.Run(ctx, g2, 2, deps)
	if !errors.Is(s.Err, context.Canceled) || len(g2.requested) > 4 {
		t.Fatalf("cancelled warm: %+v after %d requests", s, len(g2.requested))
	}
}

// TestAntimeridian: bounds that cross the antimeridian (west > east, as
// an archive's header may have them) cover both edges of the map.
func TestAntimeridian(t *testing.T) {
	g := &fakeGetter{tilejson: `{"tiles":["http://x/tiles/a/{z}/{x}/{y}.mvt"],"minzoom":0,"maxzoom":10,"bounds":[170,-10,-170,10]}`}
	p, err := NewPlan(t.Context(), config.Warm{Tiles: []config.WarmTiles{{Tileset: "a", Zoom: "3"}}}, g, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	p.parts[0].each(func(p string) bool { paths = append(paths, p); return true })
	if want := "[3/7/3.mvt 3/0/3.mvt 3/7/4.mvt 3/0/4.mvt]"; p.Total != 4 || fmt.Sprint(paths) != want {
		t.Fatalf("%d tiles %v, want %s", p.Total, paths, want)
	}
}
