package proxy

import (
	"net/http"
	"strings"

	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/proxy/core"
	"github.com/tileproxy/tileproxy/scope"
)

const tileMethods = "GET, HEAD"

// tilePattern is the tile route; tileRoute must agree with it.
const tilePattern = "/tiles/{tileset}/{path...}"

// tileRoute matches /tiles/{tileset}/{path...} as the ServeMux pattern
// does, for paths checkPath has passed (so no "//", dot segments or
// encoded slashes, and segments are the same decoded or not). ServeHTTP
// routes tile requests with it: the mux's matching cost two allocations
// per request and a few per cent of a cache hit (BenchmarkHandlerHit;
// bench/results/history-to-2026-12-02.md).
func tileRoute(path string) (tileset, rest string, ok bool) {
	after, ok := strings.CutPrefix(path, "/tiles/")
	if !ok {
		return "", "", false
	}
	tileset, rest, ok = strings.Cut(after, "/")
	return tileset, rest, ok && tileset != ""
}

// serveTile answers GET/HEAD /tiles/{tileset}/{path...}. The path was
// judged by ServeHTTP; here token -> grant -> tileset (tileRequest), then
// the core decides (source -> cache or origin -> result), then the result
// is written.
func (p *Proxy) serveTile(w *recorder, r *http.Request, name, path string) {
	principal, grants, ok := p.tileRequest(w, r, name)
	if !ok {
		return
	}
	var ticket exfil.Ticket
	if p.exfil != nil {
		var err error
		if ticket, err = p.exfil.Take(r.Context(), w.start, principal, name, path); err != nil {
			w.fail(err, "")
			return
		}
	}
	req := core.Request{Tileset: name, Path: path, Principal: principal, Head: r.Method == http.MethodHead, Scope: grants}
	if !unconditional(r.Header) {
		req.Cond = conditions(r.Header)
	}
	res, err := p.core.Get(r.Context(), req)
	defer res.Release()
	w.cache = res.Cache
	if err != nil || req.Head || (res.Status != core.StatusOK && res.Status != core.StatusPartialContent) {
		ticket.Return() // only tiles answered 200 or 206, with a body, count
	}
	if err != nil {
		w.fail(err, "")
		return
	}
	p.writeResult(w, &res)
}

// tileRequest runs what every tileset route does first: label the
// request for metrics, allow only GET/HEAD, then token -> grant ->
// tileset -> the principal's request rate. It returns the principal's
// key and what its grants allow of the tileset (nil: all of it), and
// answers the request itself when that fails.
func (p *Proxy) tileRequest(w *recorder, r *http.Request, name string) (string, []scope.Grant, bool) {
	w.tileset = p.label(name)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.fail(errMethod, tileMethods)
		return "", nil, false
	}
	key, grants, err := p.authorize(w, r, name)
	if err == nil {
		err = p.core.Allow(key)
	}
	if err != nil {
		w.fail(err, "")
		return "", nil, false
	}
	return key, grants, true
}

// writeResult writes the core's answer: the header values (each a slice
// of w.vals, so setting them allocates nothing), then the body. Before a
// memory-file body the header goes to the connection, where coalesce holds
// it, so that net/http hands the body whole to the connection's ReadFrom
// (sendfile) instead of copying its first 512 bytes.
func (p *Proxy) writeResult(w *recorder, res *core.Result) {
	h := w.Header()
	v := &res.Header
	n := 0
	set := func(k, val string) {
		if val != "" {
			w.vals[n] = val
			h[k] = w.vals[n : n+1 : n+1]
			n++
		}
	}
	if v.ContentType == "" {
		// A nil Content-Type stops net/http from sniffing one.
		h["Content-Type"] = nil
	}
	set("Content-Type", v.ContentType)
	set("Content-Encoding", v.ContentEncoding)
	set("Content-Length", v.ContentLength)
	set("Content-Range", v.ContentRange)
	set("Etag", v.ETag)
	set("Last-Modified", v.LastModified)
	set("Cache-Control", v.CacheControl)
	set("Accept-Ranges", v.AcceptRanges)
	if res.Cache != "" {
		h["X-Cache"] = hdrXCache[res.Cache]
	}
	h["X-Content-Type-Options"] = hdrNoSniff
	w.WriteHeader(res.Status)
	if res.Status != http.StatusNoContent && res.Status != http.StatusNotModified {
		if res.FromFile() {
			w.Flush()
		}
		if _, err := res.WriteBody(w); err != nil {
			// Headers are gone; all that is left is to stop and say why.
			w.err = err
		}
	}
}

// Header values shared by every tile answer, as slices so the hot path
// assigns them without allocating.
var (
	hdrNoSniff = []string{"nosniff"}
	hdrXCache  = map[string][]string{"HIT": {"HIT"}, "MISS": {"MISS"}, "STALE": {"STALE"}}
)

// conditionalHeaders are the request headers the core judges.
var conditionalHeaders = [...]string{"Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"}

// unconditional reports a request with no Range and no precondition.
func unconditional(h http.Header) bool {
	for _, k := range conditionalHeaders {
		if _, ok := h[k]; ok {
			return false
		}
	}
	return true
}

// conditions reads the request's conditional and range headers. A
// multi-range Range is dropped (see core.Conditions.Range).
func conditions(h http.Header) core.Conditions {
	c := core.Conditions{
		IfMatch:           h.Get("If-Match"),
		IfNoneMatch:       h.Get("If-None-Match"),
		IfModifiedSince:   h.Get("If-Modified-Since"),
		IfUnmodifiedSince: h.Get("If-Unmodified-Since"),
		IfRange:           h.Get("If-Range"),
		Range:             h.Get("Range"),
	}
	if strings.Contains(c.Range, ",") {
		c.Range = ""
	}
	return c
}
