// Package core decides what a tile request gets, with no HTTP types: it
// takes a judged request (the principal has a grant for the tileset, the
// path is checked) and returns a Result (status, header values rendered
// in advance, and a body that is cached bytes, a section of the memory
// file, or an origin stream), which package proxy writes to the wire. Its
// model is go-pmtiles' Server.Get, and tests call it directly.
//
// A request's way through it reads top to bottom in Get: tileset ->
// source -> cache -> result. Where a tileset's objects come from is a
// Source.
package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/scope"
)

// Deps are the core's collaborators.
type Deps struct {
	// Fetcher reads objects from the origin; required. The core wraps it
	// in an origin.Guard over Slots.
	Fetcher origin.Fetcher
	// Cache keeps hot tiles; nil streams every request from the origin.
	Cache *cache.Cache
	// CacheConfig is the cache settings in force when Cache is nil
	// (max_object_bytes still decides what counts as a stream); with a
	// Cache they are Cache.Config() and this is ignored. Zero: read from
	// cfg.Cache. The cache section is never read anywhere else, so a
	// reload cannot apply a cache setting to the core but not the cache.
	CacheConfig cache.Config
	// Slots bound the origin requests in flight; nil: a bound of
	// s3.max_in_flight of the core's own. A process passes the same
	// Slots to every configuration, so a reload keeps what is held.
	Slots *origin.Slots
	// Limits are the per-principal limits; nil: limits of the core's own
	// from cfg.Limits. Shared across reloads for the same reason.
	Limits *Limits
	// Metrics records cache and origin outcomes; nil records nothing.
	Metrics *metrics.Metrics
	// Logger receives origin errors; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Core answers tile requests for one configuration. It maps a tileset to
// its source and the source's answer to a Result; what the origin shares
// (slots, metrics, failure logs) is the origin.Guard's, and each source
// gets only a sourceDeps, never the core. It is safe for concurrent use.
type Core struct {
	publicURL string
	tilesets  map[string]*tileset
	cache     *cache.Cache
	// maxObject is cache.max_object_bytes in force: larger objects stream.
	maxObject int64
	limits    *Limits // per-principal stream and rate limits
	metrics   *metrics.Metrics
}

// tileset is a configured tileset as the core serves it.
type tileset struct {
	cfg          *config.Tileset
	src          Source
	cache        *cache.Cache   // nil without one
	load         cache.LoadFunc // built once, so a hit allocates no closure
	filterLoad   cache.LoadFunc // the same for layer-filtered variants
	cacheControl string
	tileJSON     []byte
}

// sourceDeps is everything a Source may use. A source holds no *Core:
// it cannot reach back into the core that calls it.
type sourceDeps struct {
	// fetch is the guarded origin (slots, metrics, failure logs).
	fetch origin.Fetcher
	// cache is the cache settings in force (max_object_bytes, ttl,
	// negative_ttl, the load timeout).
	cache cache.Config
	// drop removes the cached entries whose keys start with a prefix;
	// it returns how many. Nil without a cache.
	drop func(prefix string) int
	now  func() time.Time
	log  *slog.Logger
}

// New builds the core for a validated cfg.
func New(cfg *config.Config, deps Deps) (*Core, error) {
	if deps.Fetcher == nil {
		return nil, errors.New("core: Fetcher is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	settings := deps.CacheConfig
	switch {
	case deps.Cache != nil:
		settings = deps.Cache.Config()
	case settings == cache.Config{}:
		settings = cache.FromConfig(cfg.Cache, 2*cfg.S3.Timeout.Duration()+cfg.S3.ConnectTimeout.Duration())
	}
	if deps.Slots == nil {
		deps.Slots = origin.NewSlots(cfg.S3.MaxInFlight)
	}
	if deps.Limits == nil {
		var err error
		if deps.Limits, err = NewLimits(cfg.Limits, deps.Now); err != nil {
			return nil, fmt.Errorf("core: limits: %w", err)
		}
	}
	c := &Core{
		publicURL: cfg.PublicURL,
		tilesets:  make(map[string]*tileset, len(cfg.Tilesets)),
		cache:     deps.Cache,
		maxObject: settings.MaxObjectBytes,
		limits:    deps.Limits,
		metrics:   deps.Metrics,
	}
	sd := sourceDeps{
		fetch: origin.NewGuard(deps.Fetcher, origin.GuardDeps{Slots: deps.Slots, Observer: deps.Metrics, Logger: deps.Logger, Now: deps.Now}),
		cache: settings,
		now:   deps.Now,
		log:   deps.Logger,
	}
	if deps.Cache != nil {
		sd.drop = func(prefix string) int {
			return deps.Cache.RemoveIf(func(k string) bool { return strings.HasPrefix(k, prefix) })
		}
	}
	for i := range cfg.Tilesets {
		t := &cfg.Tilesets[i]
		ts := &tileset{cfg: t, cacheControl: t.CacheControl, cache: deps.Cache}
		if ts.cacheControl == "" {
			ts.cacheControl = config.DefaultCacheControl
		}
		if t.Archive != "" {
			ts.src = newArchiveSource(t, sd)
		} else {
			ts.src = newPrefixSource(t, sd)
			var err error
			if ts.tileJSON, err = renderTileJSON(cfg.PublicURL, t); err != nil {
				return nil, fmt.Errorf("core: tileset %s: TileJSON: %w", t.Name, err)
			}
		}
		ts.load = ts.src.Load
		ts.filterLoad = ts.filter
		c.tilesets[t.Name] = ts
	}
	return c, nil
}

// KeyPrefix is where the cache key of everything tileset t reads starts:
// "bucket/prefix" for a prefix tileset (the key goes on with the object's
// path), "bucket/archive#" for an archive (it goes on with the archive's
// ETag and the tile). It is the one place the key format is written: the
// sources build their keys on it, and a reload drops a removed tileset's
// entries by it (KeyPrefixes).
func KeyPrefix(t *config.Tileset) string {
	if t.Archive != "" {
		return t.Bucket + "/" + t.Archive + "#"
	}
	return t.Bucket + "/" + t.Prefix
}

// KeyPrefixes are the KeyPrefix of every tileset the core serves.
func (c *Core) KeyPrefixes() []string {
	out := make([]string, 0, len(c.tilesets))
	for _, ts := range c.tilesets {
		out = append(out, KeyPrefix(ts.cfg))
	}
	return out
}

// Has reports whether name is a configured tileset.
func (c *Core) Has(name string) bool { return c.tilesets[name] != nil }

// Allow takes one request from the principal's rate limit (limits.rate),
// or refuses with a *LimitedError. Callers ask it once per request, after
// the grant and before any work.
func (c *Core) Allow(principal string) error {
	if err := c.limits.allow(principal); err != nil {
		return c.limited(err)
	}
	return nil
}

// limited counts a per-principal refusal and passes err on.
func (c *Core) limited(err error) error {
	var le *LimitedError
	if errors.As(err, &le) {
		c.metrics.Limited(le.Reason)
	}
	return err
}

// Request is a judged tile request: the caller has checked the path and
// that Principal may read Tileset.
type Request struct {
	Tileset string
	// Path is the object's path within the tileset ("3/4/2.png").
	Path string
	// Principal keys the per-principal stream limit (auth.Principal.Key).
	Principal string
	// Head asks for the headers only.
	Head bool
	// Scope is what the principal's grants allow of the tileset (judged
	// before any cache or origin work); nil: the whole tileset.
	Scope []scope.Grant
	// Cond holds the request's conditional and range header values.
	Cond Conditions
}

// Header holds the header values of a tile answer, "" for absent. The
// strings of a cached tile were rendered when it was loaded, so a hit
// formats nothing.
type Header struct {
	ContentType     string
	ContentEncoding string
	ContentLength   string
	ContentRange    string
	ETag            string
	LastModified    string
	CacheControl    string
	// AcceptRanges is "bytes" on answers with a body.
	AcceptRanges string
}

// Result is the core's answer. Whoever gets one must call Release once the
// body is written (or abandoned): it holds a cached entry, an origin
// stream, or a stream slot. The Header values are the answer's own
// strings (a cached entry's are copied out per lookup): they stay valid
// after Release.
type Result struct {
	Status int
	Header Header
	// Cache is the X-Cache value: HIT, MISS or STALE, "" when the cache
	// was not asked.
	Cache string

	entry   cache.Entry // body from the cache, when cached (held)
	cached  bool
	off, n  int64         // the part of entry's body to send
	stream  io.ReadCloser // body from the origin, when set
	release func()        // the principal's stream slot, when held
}

// WriteBody writes the result's body to w: cached bytes in one write, a
// memory-file section through w's ReadFrom (sendfile), an origin stream
// as it arrives. Nothing for HEAD, 204 and 304.
func (r *Result) WriteBody(w io.Writer) (int64, error) {
	switch {
	case r.cached && r.n == 0:
	case r.cached && r.off == 0 && r.n == r.entry.Len():
		return r.entry.WriteTo(w)
	case r.cached:
		return io.Copy(w, r.entry.NewRangeReader(r.off, r.n))
	case r.stream != nil:
		return io.Copy(w, r.stream)
	}
	return 0, nil
}

// FromFile reports a body sent from the cache's memory file (sendfile).
func (r *Result) FromFile() bool { return r.cached && r.entry.InFile() }

// Release lets go of what the result holds. It is safe to call on a zero
// Result and more than once.
func (r *Result) Release() {
	if r.cached {
		r.entry.Release()
		r.cached = false
	}
	if r.stream != nil {
		r.stream.Close()
		r.stream = nil
	}
	if r.release != nil {
		r.release()
		r.release = nil
	}
}

// Get answers req. The way reads top to bottom: tileset -> source key ->
// cache (or origin stream) -> result. Errors are the sentinels of this
// package, auth's and origin's, for the caller's one error mapping; a
// Result returned with an error carries only its Cache value.
func (c *Core) Get(ctx context.Context, req Request) (Result, error) {
	ts := c.tilesets[req.Tileset]
	if ts == nil {
		return Result{}, ErrUnknownTileset
	}
	var layers []string
	if req.Scope != nil {
		var in bool
		var err error
		switch layers, in, err = scoped(&req); {
		case err != nil:
			return Result{}, err
		case !in:
			return c.outside(ts)
		}
	}
	res, err := c.getLayers(ctx, ts, req, layers)
	if errors.Is(err, ErrSourceChanged) {
		// The archive was replaced under this request: once more, on the
		// new version.
		res.Release()
		res, err = c.getLayers(ctx, ts, req, layers)
	}
	return res, err
}

// getLayers is get, or getFiltered when only some layers may be sent.
func (c *Core) getLayers(ctx context.Context, ts *tileset, req Request, layers []string) (Result, error) {
	if layers != nil {
		return c.getFiltered(ctx, ts, req, layers)
	}
	return c.get(ctx, ts, req)
}

func (c *Core) get(ctx context.Context, ts *tileset, req Request) (Result, error) {
	key, err := ts.src.Key(ctx, req.Path)
	if err != nil {
		return Result{}, err
	}
	if c.cache == nil {
		return c.stream(ctx, ts, key, req, "MISS")
	}
	e, out, err := c.cache.Get(ctx, key, ts.load)
	if err == nil || !errors.Is(err, ctx.Err()) {
		c.metrics.Cache(out.String())
	}
	switch {
	case err == nil && e.Large():
		e.Release()
		return c.stream(ctx, ts, key, req, "MISS")
	case err == nil:
		return c.fromEntry(ts, e, out.Header(), req)
	case errors.Is(err, cache.ErrNotFound):
		return c.missing(ts, out.Header())
	}
	return Result{Cache: out.Header()}, err
}

// TileJSON is the tileset's TileJSON document and its Cache-Control.
func (c *Core) TileJSON(ctx context.Context, name string) ([]byte, string, error) {
	ts := c.tilesets[name]
	if ts == nil {
		return nil, "", ErrUnknownTileset
	}
	if src, ok := ts.src.(tileJSONSource); ok {
		doc, err := src.TileJSON(ctx, c.publicURL)
		return doc, ts.cacheControl, err
	}
	return ts.tileJSON, ts.cacheControl, nil
}

// fromEntry answers from a cached entry, which it holds: a plain GET or
// HEAD (the bulk of map traffic) takes the rendered headers as they are;
// a conditional or ranged one is judged as net/http's ServeContent judges
// a file (conditional.go).
func (c *Core) fromEntry(ts *tileset, e cache.Entry, xcache string, req Request) (Result, error) {
	m := e.Meta()
	res := Result{
		Status: StatusOK,
		Header: Header{
			ContentType:     m.ContentType,
			ContentEncoding: m.ContentEncoding,
			ContentLength:   m.ContentLength,
			ETag:            m.ETag,
			LastModified:    m.LastModified,
			CacheControl:    ts.cacheControl,
			AcceptRanges:    "bytes",
		},
		Cache:  xcache,
		entry:  e,
		cached: true,
		n:      e.Len(),
	}
	if !req.Cond.None() {
		d, err := req.Cond.decide(m.ETag, m.Modified, e.Len())
		if err != nil {
			e.Release()
			return Result{Cache: xcache}, err
		}
		switch d.status {
		case StatusNotModified:
			res.Status = StatusNotModified
			res.Header.ContentType, res.Header.ContentEncoding, res.Header.ContentLength = "", "", ""
			if m.ETag != "" {
				res.Header.LastModified = ""
			}
			res.n = 0
		case StatusPartialContent:
			res.Status = StatusPartialContent
			res.off, res.n = d.start, d.length
			res.Header.ContentRange = d.contentRange
			res.Header.ContentLength = strconv.FormatInt(d.length, 10)
		}
	}
	if req.Head {
		res.n = 0
	}
	return res, nil
}

// missing answers a tile the source does not have.
func (c *Core) missing(ts *tileset, xcache string) (Result, error) {
	if ts.cfg.Missing == config.MissingEmpty {
		return Result{Status: StatusNoContent, Header: Header{CacheControl: ts.cacheControl}, Cache: xcache}, nil
	}
	return Result{Cache: xcache}, ErrNotFound
}

// stream passes the request to the source's origin and streams the
// answer: for objects too large to cache, or when no cache is configured.
// Conditionals and Range go to the origin as they are.
func (c *Core) stream(ctx context.Context, ts *tileset, key string, req Request, xcache string) (Result, error) {
	obj, err := ts.src.Open(ctx, key, req)
	switch {
	case err == nil:
	case errors.Is(err, origin.ErrNotModified):
		res := Result{Status: StatusNotModified, Header: Header{CacheControl: ts.cacheControl, AcceptRanges: "bytes"}, Cache: xcache}
		if inm := req.Cond.IfNoneMatch; inm != "" && len(inm) < 200 {
			res.Header.ETag = inm
		}
		return res, nil
	case errors.Is(err, origin.ErrNotFound):
		return c.missing(ts, xcache)
	default:
		return Result{Cache: xcache}, err
	}
	res := Result{Status: StatusOK, Cache: xcache, stream: obj.Body}
	if obj.Body != nil && !req.Head && (obj.Size < 0 || obj.Size > c.maxObject) {
		// A download a slow reader can hold open for minutes counts
		// against limits.streams_per_principal. Tile-sized bodies (what
		// the cache would keep, and every tile with the cache off) do
		// not, so a map page's burst of tiles never meets the limit.
		release, err := c.limits.openStream(req.Principal)
		if err != nil {
			res.Release()
			return Result{Cache: xcache}, c.limited(err)
		}
		res.release = release
	}
	res.Header = Header{
		ContentType:     contentType(obj.ContentType, key),
		ContentEncoding: obj.ContentEncoding,
		ETag:            obj.ETag,
		CacheControl:    ts.cacheControl,
		AcceptRanges:    "bytes",
	}
	if !obj.LastModified.IsZero() {
		res.Header.LastModified = obj.LastModified.UTC().Format(timeFormat)
	}
	if obj.Size >= 0 {
		res.Header.ContentLength = strconv.FormatInt(obj.Size, 10)
	}
	if obj.ContentRange != "" {
		res.Header.ContentRange = obj.ContentRange
		res.Status = StatusPartialContent
	}
	if req.Head && res.stream != nil {
		res.stream.Close()
		res.stream = nil
	}
	return res, nil
}
