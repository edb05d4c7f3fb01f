// Package warm pre-fills the tile cache when tileproxy serve starts
// (cache.warm): every tile of a zoom range within a tileset's bounds, or
// the tiles a file lists, fetched through the tile core as a request
// would be, a bounded number at a time, with progress in the log and in
// tileproxy_cache_warm_* metrics. A replica that restarts then serves
// its first users from memory instead of sending them all to S3.
package warm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy/core"
)

// Getter is the part of the tile core a warm uses.
type Getter interface {
	Get(ctx context.Context, req core.Request) (core.Result, error)
	TileJSON(ctx context.Context, name string) ([]byte, string, error)
}

// Deps are the warm's collaborators; zero values get defaults.
type Deps struct {
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// Open reads a keys file; os.Open when nil.
	Open func(name string) (io.ReadCloser, error)
	// Sleep waits between tries of a tile the origin was too busy for;
	// a timer when nil.
	Sleep func(ctx context.Context, d time.Duration)
}

// Errors of a plan or a run.
var (
	// ErrTooMany: the plan is over config.MaxWarmTiles.
	ErrTooMany = errors.New("warm: too many tiles")
	// ErrFailing: so many tiles in a row failed that the rest would too.
	ErrFailing = errors.New("warm: the origin keeps failing")
)

// maxFailuresInARow stops a warm whose origin is down, instead of
// spending a timeout on every remaining tile.
const maxFailuresInARow = 50

// busyTries is how often a tile is tried while every origin slot is
// taken (origin.ErrSaturated), waiting longer each time, before it counts
// as failed.
const busyTries = 8

// Plan is what a warm fetches, in order.
type Plan struct {
	parts []part
	// Total is how many tiles the plan holds.
	Total int
}

// part is one config.WarmTiles entry: a list of paths, or a zoom range
// over bounds, whose paths are made as the warm goes.
type part struct {
	tileset string
	paths   []string
	lo, hi  int
	ext     string
	bounds  [4]float64
}

// NewPlan reads the key files and the tilesets' TileJSON (zooms, bounds
// and tile extension, from the archive for archive tilesets) and counts
// the tiles.
func NewPlan(ctx context.Context, cfg config.Warm, g Getter, deps Deps) (*Plan, error) {
	open := deps.Open
	if open == nil {
		open = func(name string) (io.ReadCloser, error) { return os.Open(name) }
	}
	p := &Plan{}
	for i, t := range cfg.Tiles {
		where := fmt.Sprintf("cache.warm.tiles[%d] (%s)", i, t.Tileset)
		pt := part{tileset: t.Tileset}
		if t.Keys != "" {
			paths, err := readKeys(open, t.Keys, config.MaxWarmTiles-p.Total)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			pt.paths = paths
			p.Total += len(paths)
		} else {
			lo, hi, err := t.ZoomRange()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			doc, _, err := g.TileJSON(ctx, t.Tileset)
			if err != nil {
				return nil, fmt.Errorf("%s: reading the tileset's TileJSON: %w", where, err)
			}
			var tj struct {
				Tiles   []string  `json:"tiles"`
				MinZoom int       `json:"minzoom"`
				MaxZoom int       `json:"maxzoom"`
				Bounds  []float64 `json:"bounds"`
			}
			if err := json.Unmarshal(doc, &tj); err != nil || len(tj.Tiles) == 0 || len(tj.Bounds) != 4 {
				return nil, fmt.Errorf("%s: the tileset's TileJSON has no tile URL or bounds", where)
			}
			_, ext, _ := strings.Cut(tj.Tiles[0], "{z}/{x}/{y}")
			pt.lo, pt.hi, pt.ext = max(lo, tj.MinZoom), min(hi, tj.MaxZoom), ext
			copy(pt.bounds[:], tj.Bounds)
			n := pt.count()
			if n > float64(config.MaxWarmTiles-p.Total) {
				return nil, fmt.Errorf("%s: zoom %s is %.0f tiles, and a warm holds at most %d: %w", where, t.Zoom, n, config.MaxWarmTiles, ErrTooMany)
			}
			p.Total += int(n)
		}
		p.parts = append(p.parts, pt)
	}
	return p, nil
}

// readKeys reads a keys file: one tile path per line.
func readKeys(open func(string) (io.ReadCloser, error), name string, room int) ([]string, error) {
	f, err := open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if len(paths) == room {
			return nil, fmt.Errorf("%s lists more than %d tiles: %w", name, config.MaxWarmTiles, ErrTooMany)
		}
		paths = append(paths, strings.TrimPrefix(l, "/"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return paths, nil
}

// ranges are the tiles at zoom z within the bounds: x ranges (two when
// the bounds cross the antimeridian) and a y range.
func (pt *part) ranges(z int) (xs [][2]int, y0, y1 int) {
	n := 1 << z
	x := func(lon float64) int { return clamp(int(math.Floor((lon+180)/360*float64(n))), n) }
	y := func(lat float64) int {
		lat = math.Max(-85.0511, math.Min(85.0511, lat)) * math.Pi / 180
		return clamp(int(math.Floor((1-math.Log(math.Tan(lat)+1/math.Cos(lat))/math.Pi)/2*float64(n))), n)
	}
	w, s, e, nn := pt.bounds[0], pt.bounds[1], pt.bounds[2], pt.bounds[3]
	if w <= e {
		xs = [][2]int{{x(w), x(e)}}
	} else { // across the antimeridian
		xs = [][2]int{{x(w), n - 1}, {0, x(e)}}
	}
	return xs, y(nn), y(s)
}

func clamp(v, n int) int { return max(0, min(v, n-1)) }

func (pt *part) count() float64 {
	var total float64
	for z := pt.lo; z <= pt.hi; z++ {
		xs, y0, y1 := pt.ranges(z)
		for _, r := range xs {
			total += float64(r[1]-r[0]+1) * float64(y1-y0+1)
		}
	}
	return total
}

// each calls fn with every path of the part, in order, until fn returns
// false.
func (pt *part) each(fn func(path string) bool) bool {
	for _, p := range pt.paths {
		if !fn(p) {
			return false
		}
	}
	if pt.paths != nil {
		return true
	}
	for z := pt.lo; z <= pt.hi; z++ {
		xs, y0, y1 := pt.ranges(z)
		for y := y0; y <= y1; y++ {
			for _, r := range xs {
				for x := r[0]; x <= r[1]; x++ {
					if !fn(fmt.Sprintf("%d/%d/%d%s", z, x, y, pt.ext)) {
						return false
					}
				}
			}
		}
	}
	return true
}

// Summary is how a warm went.
type Summary struct {
	Cached, Missing, Failed int
	// Err is why it stopped early, if it did: ctx's error or ErrFailing.
	Err error
}

// Run fetches the plan's tiles, concurrency at a time, into the cache
// behind g, and returns when all are done, ctx ends, or the origin keeps
// failing. Progress goes to the log at every tenth of the plan and to
// the metrics at every tile.
func (p *Plan) Run(ctx context.Context, g Getter, concurrency int, deps Deps) Summary {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sleep := deps.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}
	deps.Metrics.WarmPlanned(p.Total)
	log.Info("cache warm started", "tiles", p.Total, "concurrency", concurrency)
	start := time.Now()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	type job struct{ tileset, path string }
	jobs := make(chan job)
	var cached, missing, failed, done, inARow atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	for range max(concurrency, 1) {
		wg.Go(func() {
			for j := range jobs {
				result, err := fetch(ctx, g, j.tileset, j.path, sleep)
				switch result {
				case "cached":
					cached.Add(1)
					inARow.Store(0)
				case "missing":
					missing.Add(1)
					inARow.Store(0)
				case "":
					continue // ctx ended
				default:
					failed.Add(1)
					lastErr.Store(fmt.Sprintf("%s/%s: %v", j.tileset, j.path, err))
					if inARow.Add(1) >= maxFailuresInARow {
						stop(ErrFailing)
					}
				}
				deps.Metrics.WarmTile(result)
				d := done.Add(1)
				if tenth := int64(p.Total) / 10; tenth > 0 && d%tenth == 0 && d < int64(p.Total) {
					log.Info("cache warm progress", "done", d, "tiles", p.Total, "cached", cached.Load(), "missing", missing.Load(), "failed", failed.Load())
				}
			}
		})
	}
	for _, pt := range p.parts {
		ok := pt.each(func(path string) bool {
			select {
			case jobs <- job{pt.tileset, path}:
				return true
			case <-ctx.Done():
				return false
			}
		})
		if !ok {
			break
		}
	}
	close(jobs)
	wg.Wait()
	s := Summary{Cached: int(cached.Load()), Missing: int(missing.Load()), Failed: int(failed.Load()), Err: context.Cause(ctx)}
	attrs := []any{"tiles", p.Total, "cached", s.Cached, "missing", s.Missing, "failed", s.Failed, "seconds", time.Since(start).Round(time.Millisecond).Seconds()}
	if e, ok := lastErr.Load().(string); ok {
		attrs = append(attrs, "last_error", e)
	}
	switch {
	case errors.Is(s.Err, ErrFailing):
		log.Error("cache warm stopped: the origin kept failing", attrs...)
	case s.Err != nil:
		log.Warn("cache warm stopped before the end", append(attrs, "err", s.Err)...)
	case s.Failed > 0:
		log.Warn("cache warm done, with failures", attrs...)
	default:
		log.Info("cache warm done", attrs...)
	}
	return s
}

// fetch asks the core for one tile (a HEAD: the body goes to the cache,
// nowhere else) and says how it went: cached, missing or failed; "" when
// ctx ended.
func fetch(ctx context.Context, g Getter, tileset, path string, sleep func(context.Context, time.Duration)) (string, error) {
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		if ctx.Err() != nil {
			return "", ctx.Err() // stopped: start nothing more
		}
		res, err := g.Get(ctx, core.Request{Tileset: tileset, Path: path, Head: true})
		status := res.Status
		res.Release()
		switch {
		case ctx.Err() != nil:
			return "", ctx.Err()
		case err == nil && status == core.StatusNoContent:
			return "missing", nil // missing: empty
		case err == nil:
			return "cached", nil
		case errors.Is(err, core.ErrNotFound):
			return "missing", nil
		case errors.Is(err, origin.ErrSaturated) && try < busyTries:
			sleep(ctx, wait)
			wait *= 2
			continue
		}
		return "failed", err
	}
}
