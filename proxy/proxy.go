// Package proxy is tileproxy's http.Handler: it judges the path, checks
// the caller's token and grant, finds the tileset, and answers from the
// origin with the HTTP caching semantics map libraries rely on.
//
// Order of checks, always: path -> token -> grant -> tileset -> cache ->
// origin. Authorization is decided before anything about the object is
// looked at.
//
// Serve it through a coalesce listener, as tileproxy serve does: a cached
// body kept in the cache's memory file then goes out with sendfile. On a
// plain listener it still arrives intact, but net/http copies it through
// a fresh 32 KiB buffer per response.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
)

// Deps are the proxy's collaborators.
type Deps struct {
	// Verifier checks tokens; required.
	Verifier *auth.Verifier
	// Fetcher reads objects from the origin; required.
	Fetcher origin.Fetcher
	// Cache keeps hot tiles; nil streams every request from the origin.
	Cache *cache.Cache
	// Metrics records requests; nil records nothing.
	Metrics *metrics.Metrics
	// Logger receives origin errors and other events; slog.Default() when nil.
	Logger *slog.Logger
	// AccessLog receives the access line of every request when log.access
	// is on; nil writes none.
	AccessLog *accesslog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Proxy is the main listener's handler.
type Proxy struct {
	cfg      *config.Config
	tilesets map[string]*config.Tileset
	verifier *auth.Verifier
	fetcher  origin.Fetcher
	cache    *cache.Cache
	cors     *cors         // nil without allowed origins
	inFlight chan struct{} // one slot per running origin request (s3.max_in_flight)
	limits   *principals   // per-principal stream and rate limits
	metrics  *metrics.Metrics
	// loaders holds each tileset's cache loader.
	loaders map[string]cache.LoadFunc
	// cacheControl holds each tileset's Cache-Control, ready to assign.
	cacheControl map[string][]string
	// tileJSON holds each tileset's rendered TileJSON document.
	tileJSON map[string][]byte
	// viewerPage and viewerFiles are rendered once when viewer is on.
	viewerPage  []byte
	viewerFiles map[string][]byte
	log         *slog.Logger
	access      *accesslog.Logger // nil when access lines are off
	now         func() time.Time
	mux         *http.ServeMux
	ready       atomic.Bool // set once the origin answered (or the grace passed)
	draining    atomic.Bool // set on shutdown; wins over ready
}

var _ http.Handler = (*Proxy)(nil)

// New builds the handler for a validated cfg.
func New(cfg *config.Config, deps Deps) (*Proxy, error) {
	if deps.Verifier == nil || deps.Fetcher == nil {
		return nil, errors.New("proxy: Verifier and Fetcher are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	p := &Proxy{
		cfg:          cfg,
		tilesets:     make(map[string]*config.Tileset, len(cfg.Tilesets)),
		verifier:     deps.Verifier,
		fetcher:      deps.Fetcher,
		cache:        deps.Cache,
		cors:         newCORS(cfg.CORS.AllowedOrigins),
		inFlight:     make(chan struct{}, max(cfg.S3.MaxInFlight, 1)),
		metrics:      deps.Metrics,
		cacheControl: make(map[string][]string, len(cfg.Tilesets)),
		loaders:      make(map[string]cache.LoadFunc, len(cfg.Tilesets)),
		tileJSON:     make(map[string][]byte, len(cfg.Tilesets)),
		log:          deps.Logger,
		access:       deps.AccessLog,
		now:          deps.Now,
		mux:          http.NewServeMux(),
	}
	if !cfg.Log.Access {
		p.access = nil
	}
	var err error
	if p.limits, err = newPrincipals(cfg.Limits, deps.Now); err != nil {
		return nil, fmt.Errorf("proxy: limits: %w", err)
	}
	for i := range cfg.Tilesets {
		t := &cfg.Tilesets[i]
		p.tilesets[t.Name] = t
		cc := t.CacheControl
		if cc == "" {
			cc = config.DefaultCacheControl
		}
		p.cacheControl[t.Name] = []string{cc}
		p.loaders[t.Name] = p.loader(t)
		doc, err := renderTileJSON(cfg.PublicURL, t)
		if err != nil {
			return nil, fmt.Errorf("proxy: tileset %s: TileJSON: %w", t.Name, err)
		}
		p.tileJSON[t.Name] = doc
	}
	if cfg.Viewer {
		if p.viewerPage, p.viewerFiles, err = renderViewer(cfg.Tilesets); err != nil {
			return nil, err
		}
	}
	handle := func(pattern string, h func(*recorder, *http.Request)) {
		p.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { h(w.(*recorder), r) })
	}
	// ServeHTTP routes this pattern itself (tileRoute); it stays here so
	// the mux holds the whole route table and answers whatever that skips.
	handle(tilePattern, func(w *recorder, r *http.Request) {
		p.serveTile(w, r, r.PathValue("tileset"), r.PathValue("path"))
	})
	handle("/tiles/{file}", p.serveTileJSON)
	handle("/auth/session", p.serveSession)
	handle("/viewer/{file}", p.serveViewerAsset)
	handle("/healthz", p.serveHealth)
	handle("/readyz", p.serveReady)
	handle("/", p.serveRoot)
	return p, nil
}

// SetReady marks the proxy ready (or not) for /readyz.
func (p *Proxy) SetReady(ready bool) { p.ready.Store(ready) }

// Drain makes /readyz answer 503 from now on, whatever SetReady says
// later, so a load balancer stops sending traffic before shutdown.
func (p *Proxy) Drain() { p.draining.Store(true) }

// ServeHTTP judges the raw path, routes, and records the outcome.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, start: p.now()}
	if err := checkPath(rawPath(r)); err != nil {
		// Counted, so a flood of hostile paths shows in requests_total,
		// under _unknown: the path is not trusted to name a tileset.
		rec.tileset = metrics.UnknownTileset
		rec.fail(err, "")
	} else if !p.cors.preflight(rec, r) {
		p.cors.allow(rec.Header(), r.Header.Get("Origin"))
		if name, path, ok := tileRoute(r.URL.Path); ok {
			p.serveTile(rec, r, name, path)
		} else {
			p.mux.ServeHTTP(rec, r)
		}
	}
	p.finish(rec, r)
}

// finish records metrics and the access line for one request.
func (p *Proxy) finish(rec *recorder, r *http.Request) {
	end := p.now()
	d := end.Sub(rec.start)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.tileset != "" {
		p.metrics.Request(rec.tileset, rec.status, d)
	}
	// The one place a refused token or grant is counted, whichever route
	// refused it.
	if rec.err != nil {
		if reason := auth.Reason(rec.err); reason != "other" {
			p.metrics.AuthFailure(reason)
		}
	}
	if p.access == nil {
		return
	}
	line := accesslog.Line{
		Time:   end,
		Method: r.Method,
		// The path only, as the query may hold an access_token, and with
		// anything shaped like a token in the path itself cut out.
		Path:     accesslog.RedactTokens(r.URL.Path),
		Status:   rec.status,
		Bytes:    rec.bytes,
		Duration: d,
		Tileset:  rec.tileset,
		Cache:    rec.cache,
		Subject:  rec.subject,
	}
	if rec.err != nil && rec.status >= 500 {
		line.Err = accesslog.RedactTokens(rec.err.Error())
	}
	p.access.Log(&line)
}

// label bounds a tileset name for metrics.
func (p *Proxy) label(name string) string {
	if _, ok := p.tilesets[name]; ok {
		return name
	}
	return metrics.UnknownTileset
}

// authorize runs token -> grant -> tileset for name.
func (p *Proxy) authorize(rec *recorder, r *http.Request, name string) (*config.Tileset, *auth.Principal, error) {
	tok, err := p.verifier.TokenFromRequest(r)
	if err == nil {
		var pr *auth.Principal
		pr, err = p.verifier.Verify(r.Context(), tok)
		if err == nil {
			rec.subject = pr.SubjectHash
			if !pr.Allows(name) {
				err = auth.ErrNotGranted
			} else if ts, ok := p.tilesets[name]; ok {
				return ts, pr, nil
			} else {
				return nil, pr, errUnknownTileset
			}
		}
	}
	return nil, nil, err
}

// logOrigin logs an origin failure with what an operator needs to chase
// it: the AWS error code and request ID, never credentials.
func (p *Proxy) logOrigin(ctx context.Context, msg, tileset string, err error) {
	attrs := []any{"tileset", tileset, "err", accesslog.RedactTokens(err.Error())}
	var oe *origin.Error
	if errors.As(err, &oe) {
		attrs = append(attrs, "op", oe.Op, "code", oe.Code, "request_id", oe.RequestID)
	}
	p.log.WarnContext(ctx, msg, attrs...)
}

func (p *Proxy) serveHealth(w *recorder, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

func (p *Proxy) serveReady(w *recorder, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case p.draining.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("draining\n"))
		return
	case !p.ready.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready\n"))
		return
	}
	w.Write([]byte("ready\n"))
}

func (p *Proxy) serveRoot(w *recorder, r *http.Request) {
	if r.URL.Path == "/" && p.cfg.Viewer {
		p.serveViewer(w, r)
		return
	}
	w.fail(errNotFound, "")
}

// recorder notes what was answered, for metrics and the access log.
type recorder struct {
	http.ResponseWriter
	start   time.Time
	status  int
	bytes   int64
	tileset string // metrics label: a configured name, "_unknown", or "" for non-tile routes
	cache   string // HIT, MISS, STALE when a tile was looked up
	subject string
	err     error
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom hands a body copy to the underlying writer's ReadFrom, which
// for net/http's passes it to the connection: coalesce sends a cached
// body kept in a file with sendfile instead of copying it.
func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

// writerOnly hides a writer's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }

// Flush sends what is written so far, if the underlying writer can.
func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// fail answers err through the one error mapping.
func (w *recorder) fail(err error, allow string) {
	w.err = err
	code := writeError(w, err, allow)
	if code == StatusClientClosed {
		w.status = code
	}
}

// safeTypes are the media types passed through from S3: tile and metadata
// formats a browser will not run as a document. Anything else (text/html,
// image/svg+xml, application/javascript, ...) is sent as
// application/octet-stream: whoever can write one object under any prefix
// must not be able to run script on tileproxy's origin, where the session
// cookie lives.
var safeTypes = map[string]string{
	"image/png":                          "image/png",
	"image/jpeg":                         "image/jpeg",
	"image/webp":                         "image/webp",
	"image/avif":                         "image/avif",
	"image/gif":                          "image/gif",
	"application/vnd.mapbox-vector-tile": "application/vnd.mapbox-vector-tile",
	"application/x-protobuf":             "application/x-protobuf",
	"application/protobuf":               "application/protobuf",
	"application/vnd.google.protobuf":    "application/vnd.google.protobuf",
	"application/json":                   "application/json",
	"application/geo+json":               "application/geo+json",
	"application/octet-stream":           "application/octet-stream",
}

// contentTypes by extension, for objects stored without a useful type.
var contentTypes = map[string]string{
	"png":  "image/png",
	"jpg":  "image/jpeg",
	"jpeg": "image/jpeg",
	"webp": "image/webp",
	"pbf":  "application/vnd.mapbox-vector-tile",
	"mvt":  "application/vnd.mapbox-vector-tile",
	"json": "application/json",
}

// contentType keeps S3's type when it is a safe one (its media type
// alone, without parameters), falls back to the key's extension when S3
// has only the generic type it gives uploads that did not say, and sends
// anything else as application/octet-stream.
func contentType(stored, key string) string {
	mt, _, _ := strings.Cut(stored, ";")
	mt = strings.TrimSpace(mt)
	switch {
	case mt == "", strings.EqualFold(mt, "binary/octet-stream"), strings.EqualFold(mt, "application/octet-stream"):
	default:
		if t, ok := safeTypes[mt]; ok {
			return t
		}
		if t, ok := safeTypes[strings.ToLower(mt)]; ok {
			return t
		}
		return "application/octet-stream"
	}
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		if ct, ok := contentTypes[strings.ToLower(key[i+1:])]; ok {
			return ct
		}
	}
	return "application/octet-stream"
}

// fetch asks the origin for req within s3.max_in_flight, and when no
// slot is free answers errSaturated at once rather than a queue that grows.
// The slot covers fetching from S3: until the response headers, and with
// forCache until the body is closed too (the cache loader reads it at the
// origin's pace, detached from any client). A stream's body goes out at
// the client's pace, so its slot is freed at the headers: slow readers
// are bounded per principal (limits.streams_per_principal) and by the
// write timeout, and cannot hold the origin slots everyone shares.
func (p *Proxy) fetch(ctx context.Context, req origin.Request, forCache bool) (*origin.Object, error) {
	select {
	case p.inFlight <- struct{}{}:
	default:
		return nil, errSaturated
	}
	obj, err := p.fetcher.Get(ctx, req)
	if err != nil || obj.Body == nil || !forCache {
		<-p.inFlight
		return obj, err
	}
	obj.Body = &releaseOnClose{ReadCloser: obj.Body, release: func() { <-p.inFlight }}
	return obj, nil
}

// releaseOnClose frees an in-flight slot once, when the body is closed.
type releaseOnClose struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *releaseOnClose) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// originResult is the origin_requests_total result label for err.
func originResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errSaturated):
		return "saturated"
	case errors.Is(err, origin.ErrNotModified):
		return "not_modified"
	case errors.Is(err, origin.ErrNotFound):
		return "not_found"
	case errors.Is(err, origin.ErrRangeNotSatisfiable):
		return "range"
	case errors.Is(err, origin.ErrDenied):
		return "denied"
	case errors.Is(err, origin.ErrTimeout):
		return "timeout"
	case errors.Is(err, origin.ErrUnavailable):
		return "unavailable"
	}
	return "canceled"
}
