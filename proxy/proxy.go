// Package proxy is tileproxy's http.Handler, a thin adapter over the tile
// core (proxy/core): it judges the path, checks the caller's token and
// grant, hands the judged request to the core, and writes the result.
//
// Order of checks, always: path -> token -> grant -> tileset -> source ->
// result -> write (serveTile). Authorization is decided before anything
// about the object is looked at.
//
// Serve it through a coalesce listener, as tileproxy serve does: a cached
// body kept in the cache's memory file then goes out with sendfile. On a
// plain listener it still arrives intact, but net/http copies it through
// a fresh 32 KiB buffer per response.
package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy/core"
	"github.com/tileproxy/tileproxy/scope"
)

// Deps are the proxy's collaborators.
type Deps struct {
	// Verifier checks tokens; required.
	Verifier *auth.Verifier
	// Fetcher reads objects from the origin; required.
	Fetcher origin.Fetcher
	// Cache keeps hot tiles; nil streams every request from the origin.
	Cache *cache.Cache
	// CacheConfig, Slots and Limits outlive one configuration: see
	// core.Deps. Zero values get the core's own.
	CacheConfig cache.Config
	Slots       *origin.Slots
	Limits      *core.Limits
	// Exfil enforces quotas and sweep detection (package exfil); nil
	// enforces none. It outlives one configuration too.
	Exfil *exfil.Limiter
	// Audit records every tile answer and denial before it is sent;
	// nil records none.
	Audit *audit.Writer
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
	verifier *auth.Verifier
	core     *core.Core
	cors     *cors // nil without allowed origins
	exfil    *exfil.Limiter
	audit    *audit.Writer
	metrics  *metrics.Metrics
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
	c, err := core.New(cfg, core.Deps{Fetcher: deps.Fetcher, Cache: deps.Cache, CacheConfig: deps.CacheConfig,
		Slots: deps.Slots, Limits: deps.Limits, Metrics: deps.Metrics, Logger: deps.Logger, Now: deps.Now})
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		verifier: deps.Verifier,
		core:     c,
		cors:     newCORS(cfg.CORS.AllowedOrigins),
		exfil:    deps.Exfil,
		audit:    deps.Audit,
		metrics:  deps.Metrics,
		log:      deps.Logger,
		access:   deps.AccessLog,
		now:      deps.Now,
		mux:      http.NewServeMux(),
	}
	if !cfg.Log.Access {
		p.access = nil
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

// Core is the tile core the proxy serves from: what a cache warm asks
// for tiles, as requests do.
func (p *Proxy) Core() *core.Core { return p.core }

// SetReady marks the proxy ready (or not) for /readyz.
func (p *Proxy) SetReady(ready bool) { p.ready.Store(ready) }

// Drain makes /readyz answer 503 from now on, whatever SetReady says
// later, so a load balancer stops sending traffic before shutdown.
func (p *Proxy) Drain() { p.draining.Store(true) }

// ServeHTTP judges the raw path, routes, and records the outcome.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, start: p.now()}
	if p.audit != nil {
		rec.audit, rec.head = p.audit, r.Method == http.MethodHead
		rec.path, _ = strings.CutPrefix(r.URL.Path, "/tiles/")
	}
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
	p.metrics.Protocol(r.ProtoMajor, r.ProtoMinor)
	// The one place a refused token or grant is counted, whichever route
	// refused it.
	reason, authFailure := refusal(rec.err)
	if authFailure {
		p.metrics.AuthFailure(reason)
	}
	if p.access == nil {
		return
	}
	line := accesslog.Line{
		Time:   end,
		Method: r.Method,
		Proto:  r.Proto,
		// The path only, as the query may hold an access_token, and with
		// anything shaped like a token in the path itself cut out.
		Path:     accesslog.RedactTokens(r.URL.Path),
		Status:   rec.status,
		Bytes:    rec.bytes,
		Duration: d,
		Tileset:  rec.tileset,
		Cache:    rec.cache,
		Subject:  rec.subject,
		Reason:   reason,
	}
	if rec.err != nil && rec.status >= 500 {
		line.Err = accesslog.RedactTokens(rec.err.Error())
	}
	p.access.Log(&line)
}

// label bounds a tileset name for metrics.
func (p *Proxy) label(name string) string {
	if p.core.Has(name) {
		return name
	}
	return metrics.UnknownTileset
}

// authorize runs token -> grant -> tileset for name, and returns the
// principal's key.
func (p *Proxy) authorize(rec *recorder, r *http.Request, name string) (string, []scope.Grant, error) {
	tok, err := p.verifier.TokenFromRequest(r)
	if err != nil {
		return "", nil, err
	}
	pr, err := p.verifier.Verify(r.Context(), tok)
	if err != nil {
		return "", nil, err
	}
	rec.subject, rec.principal = pr.SubjectHash, pr
	grants, ok := pr.Scope(name)
	switch {
	case !ok:
		return "", nil, auth.ErrNotGranted
	case !p.core.Has(name):
		return "", nil, core.ErrUnknownTileset
	}
	return pr.Key, grants, nil
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
	case p.audit != nil && p.audit.Err() != nil:
		// Tile answers would be refused: a balancer should look elsewhere.
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("audit trail cannot be written\n"))
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
	w.fail(core.ErrNotFound, "")
}

// recorder notes what was answered, for metrics, the access log and the
// audit trail.
type recorder struct {
	http.ResponseWriter
	start   time.Time
	status  int
	bytes   int64
	tileset string // metrics label: a configured name, "_unknown", or "" for non-tile routes
	cache   string // HIT, MISS, STALE when a tile was looked up
	// vals backs the header values of a tile answer: the header map
	// needs []string, and slices of this array cost no allocation.
	vals    [8]string
	subject string
	err     error
	// audit, when set, records tile routes' answers (tileset and path
	// set) before they are sent; unaudited, the answer became a 503.
	audit     *audit.Writer
	path      string
	principal *auth.Principal
	head      bool
	unaudited bool
}

func (w *recorder) WriteHeader(code int) {
	if w.status != 0 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.status = code
	if w.audit != nil && w.tileset != "" && !w.record(code) {
		// No line, no answer: the audit cannot be written (a full or
		// failing disk), so the answer it would record is not sent.
		w.unaudited, w.status = true, http.StatusServiceUnavailable
		h := w.Header()
		clear(h)
		h.Set("Retry-After", "1")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
		w.ResponseWriter.Write([]byte("audit unavailable\n"))
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

// record writes the audit line of an answer with status code, and
// reports whether it was written.
func (w *recorder) record(code int) bool {
	path := w.path // after /tiles/: the tileset's name, then its path
	if rest, ok := strings.CutPrefix(path, w.tileset); ok && strings.HasPrefix(rest, "/") {
		path = rest[1:]
	}
	l := audit.Line{Time: w.start, Seq: w.audit.Next(), Tileset: w.tileset, Path: accesslog.RedactTokens(path), Status: code, Cache: w.cache}
	if pr := w.principal; pr != nil {
		l.Principal, l.Issuer, l.Subject = pr.Key, pr.Issuer(), pr.Subject
	}
	l.Reason, _ = refusal(w.err)
	if !w.head && code != http.StatusNotModified && code != http.StatusNoContent {
		if v := w.Header()["Content-Length"]; len(v) == 1 {
			l.Bytes, _ = strconv.ParseInt(v[0], 10, 64)
		}
	}
	return w.audit.Record(&l) == nil
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.unaudited {
		return len(b), nil // the answer was replaced by a 503
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
		w.WriteHeader(http.StatusOK)
	}
	if w.unaudited {
		return io.Copy(io.Discard, src)
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
