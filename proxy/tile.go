package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

const tileMethods = "GET, HEAD"

// Header values shared by every tile answer, as slices so the hot path
// assigns them without allocating.
var (
	hdrBytes   = []string{"bytes"}
	hdrNoSniff = []string{"nosniff"}
	hdrXCache  = map[string][]string{"HIT": {"HIT"}, "MISS": {"MISS"}, "STALE": {"STALE"}}
)

// tilePattern is the tile route; tileRoute must agree with it.
const tilePattern = "/tiles/{tileset}/{path...}"

// tileRoute matches /tiles/{tileset}/{path...} as the ServeMux pattern
// does, for paths checkPath has passed (so no "//", dot segments or
// encoded slashes, and segments are the same decoded or not). ServeHTTP
// routes tile requests with it: the mux's matching cost a microsecond and
// two allocations per request, a few per cent of a cache hit.
func tileRoute(path string) (tileset, rest string, ok bool) {
	after, ok := strings.CutPrefix(path, "/tiles/")
	if !ok {
		return "", "", false
	}
	tileset, rest, ok = strings.Cut(after, "/")
	return tileset, rest, ok && tileset != ""
}

// serveTile answers GET/HEAD /tiles/{tileset}/{path...}: authorization
// first, then the cache (when configured), then the origin.
func (p *Proxy) serveTile(w *recorder, r *http.Request, name, path string) {
	ts, pr, ok := p.tileRequest(w, r, name)
	if !ok {
		return
	}
	// One allocation: the cache key is "bucket/key".
	cacheKey := ts.Bucket + "/" + ts.Prefix + path
	key := cacheKey[len(ts.Bucket)+1:]
	if err := checkKey(key); err != nil {
		w.fail(err, "")
		return
	}
	if p.cache == nil {
		p.serveStream(w, r, ts, pr, key)
		return
	}
	e, out, err := p.cache.Get(r.Context(), cacheKey, p.loaders[ts.Name])
	if !errors.Is(err, r.Context().Err()) || err == nil {
		p.metrics.Cache(out.String())
	}
	w.cache = out.Header()
	switch {
	case err == nil && e.Large:
		w.cache = "MISS"
		p.serveStream(w, r, ts, pr, key)
	case err == nil:
		p.serveEntry(w, r, ts, e)
	case errors.Is(err, cache.ErrNotFound):
		p.serveMissing(w, ts)
	default:
		w.fail(err, "")
	}
}

// tileRequest runs what every tileset route does first: label the
// request for metrics, allow only GET/HEAD, then token -> grant ->
// tileset -> the principal's request rate. It answers the request itself
// when that fails.
func (p *Proxy) tileRequest(w *recorder, r *http.Request, name string) (*config.Tileset, *auth.Principal, bool) {
	w.tileset = p.label(name)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.fail(errMethod, tileMethods)
		return nil, nil, false
	}
	ts, pr, err := p.authorize(w, r, name)
	if err == nil {
		// limited only on a refusal: its errors.As target would cost the
		// hit path an allocation.
		if lerr := p.limits.allow(pr.Key); lerr != nil {
			err = p.limited(lerr)
		}
	}
	if err != nil {
		w.fail(err, "")
		return nil, nil, false
	}
	return ts, pr, true
}

// limited counts a per-principal refusal and passes err on.
func (p *Proxy) limited(err error) error {
	var le *limitedError
	if errors.As(err, &le) {
		p.metrics.Limited(le.reason)
	}
	return err
}

// serveEntry answers from cached bytes. A plain GET or HEAD (the bulk of
// map traffic) gets the entry's pre-rendered headers and its body in one
// write; anything conditional or ranged goes to http.ServeContent, which
// does Range (206/416, ignoring abusive multi-ranges), If-None-Match,
// If-Modified-Since and If-Range exactly as net/http does for a file.
func (p *Proxy) serveEntry(w *recorder, r *http.Request, ts *config.Tileset, e *cache.Entry) {
	h := w.Header()
	h["Content-Type"] = e.HeaderContentType()
	if v := e.HeaderEncoding(); v != nil {
		h["Content-Encoding"] = v
	}
	if v := e.HeaderETag(); v != nil {
		h["Etag"] = v
	}
	if v := e.HeaderLastModified(); v != nil {
		h["Last-Modified"] = v
	}
	h["Cache-Control"] = p.cacheControl[ts.Name]
	h["Accept-Ranges"] = hdrBytes
	h["X-Cache"] = hdrXCache[w.cache]
	h["X-Content-Type-Options"] = hdrNoSniff
	if unconditional(r.Header) {
		h["Content-Length"] = e.HeaderContentLength()
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		sec := e.Section()
		if sec == nil {
			w.Write(e.Body)
			return
		}
		// The header goes to the connection first, where coalesce holds
		// it, so that net/http hands the whole body to the connection's
		// ReadFrom (sendfile) instead of copying its first 512 bytes.
		w.Flush()
		if _, err := io.Copy(w, sec); err != nil {
			w.err = err
		}
		runtime.KeepAlive(e) // the body's pages are e's until the copy is done
		return
	}
	if rg := r.Header.Get("Range"); strings.Contains(rg, ",") {
		// Multi-range answers are multipart, with a part header per
		// range: "0-0,0-0,..." buys a large answer for a small request.
		// No map library asks for more than one range, and a server may
		// ignore Range (RFC 9110 §14.2), so the whole tile is sent.
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", e.LastModified, e.NewReader())
	runtime.KeepAlive(e)
}

// unconditional reports a request with no Range and no precondition.
func unconditional(h http.Header) bool {
	for _, k := range [...]string{"Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"} {
		if _, ok := h[k]; ok {
			return false
		}
	}
	return true
}

func (p *Proxy) serveMissing(w *recorder, ts *config.Tileset) {
	if ts.Missing == config.MissingEmpty {
		w.Header()["Cache-Control"] = p.cacheControl[ts.Name]
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.fail(errNotFound, "")
}

// loader fetches objects of tileset ts for the cache: whole bodies up to
// max_object_bytes, a Large marker (body unread) beyond. The cache key is
// "bucket/key". prev, on revalidation, supplies the ETag for If-None-Match.
// One loader per tileset is built up front, so a hit allocates no closure.
func (p *Proxy) loader(ts *config.Tileset) cache.LoadFunc {
	return func(ctx context.Context, cacheKey string, prev *cache.Entry) (*cache.Entry, error) {
		key := cacheKey[len(ts.Bucket)+1:]
		req := origin.Request{Tileset: ts.Name, Bucket: ts.Bucket, Key: key}
		if prev != nil {
			req.IfNoneMatch = prev.ETag()
		}
		start := p.now()
		obj, err := p.fetch(ctx, req, true)
		p.metrics.Origin(ts.Name, originResult(err), p.now().Sub(start))
		switch {
		case errors.Is(err, origin.ErrNotModified):
			return nil, fmt.Errorf("%w: %w", cache.ErrNotModified, err)
		case errors.Is(err, origin.ErrNotFound):
			return nil, fmt.Errorf("%w: %w", cache.ErrNotFound, err)
		case err != nil:
			p.logOrigin(ctx, "origin request failed", ts.Name, err)
			return nil, err
		}
		defer obj.Body.Close()
		limit := p.cache.MaxObjectBytes()
		if obj.Size > limit {
			return cache.NewLargeEntry(), nil
		}
		var body []byte
		if obj.Size >= 0 {
			body = make([]byte, obj.Size)
			_, err = io.ReadFull(obj.Body, body)
		} else {
			body, err = io.ReadAll(io.LimitReader(obj.Body, limit+1))
			if int64(len(body)) > limit {
				return cache.NewLargeEntry(), nil
			}
		}
		if err != nil {
			p.logOrigin(ctx, "origin body read failed", ts.Name, err)
			return nil, &origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject body", Err: err}
		}
		return cache.NewEntry(body, contentType(obj.ContentType, key), obj.ContentEncoding, obj.ETag, obj.LastModified), nil
	}
}

// serveStream passes the request to the origin and streams the answer:
// for objects too large to cache, or when no cache is configured.
// Conditionals and Range go to S3 as they are; it answers 304/206/416.
func (p *Proxy) serveStream(w *recorder, r *http.Request, ts *config.Tileset, pr *auth.Principal, key string) {
	req := origin.Request{
		Tileset:  ts.Name,
		Bucket:   ts.Bucket,
		Key:      key,
		HeadOnly: r.Method == http.MethodHead,
	}
	req.IfNoneMatch = r.Header.Get("If-None-Match")
	if req.IfNoneMatch == "" {
		if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil {
			req.IfModifiedSince = t
		}
	}
	if rg := r.Header.Get("Range"); !req.HeadOnly && !strings.Contains(rg, ",") {
		req.Range = rg // a single range; multi-range is ignored as in serveEntry
	}
	start := p.now()
	obj, err := p.fetch(r.Context(), req, false)
	p.metrics.Origin(ts.Name, originResult(err), p.now().Sub(start))
	if w.cache == "" {
		w.cache = "MISS"
	}
	switch {
	case err == nil:
		if obj.Body != nil {
			defer obj.Body.Close()
		}
		if p.slowReadable(r, obj) {
			release, err := p.limits.openStream(pr.Key)
			if err != nil {
				w.fail(p.limited(err), "")
				return
			}
			defer release()
		}
		p.writeObject(w, r, ts, key, obj)
	case errors.Is(err, origin.ErrNotModified):
		h := w.Header()
		h["Cache-Control"] = p.cacheControl[ts.Name]
		if inm := r.Header.Get("If-None-Match"); inm != "" && len(inm) < 200 {
			h.Set("Etag", inm)
		}
		w.WriteHeader(http.StatusNotModified)
	case errors.Is(err, origin.ErrNotFound):
		p.serveMissing(w, ts)
	default:
		if code, _ := errorStatus(err); code >= 500 && code != StatusClientClosed {
			p.logOrigin(r.Context(), "origin request failed", ts.Name, err)
		}
		w.fail(err, "")
	}
}

// slowReadable reports whether obj is a download that a slow reader can
// hold open for minutes: a body larger than cache.max_object_bytes, or of
// unknown size. Those count against limits.streams_per_principal.
// Tile-sized bodies (what the cache would keep, and every tile with the
// cache off) do not, so a map page's burst of tiles never meets the limit.
func (p *Proxy) slowReadable(r *http.Request, obj *origin.Object) bool {
	return obj.Body != nil && r.Method != http.MethodHead &&
		(obj.Size < 0 || obj.Size > int64(p.cfg.Cache.MaxObjectBytes))
}

// writeObject sends an origin object: headers, then the body streamed
// straight through without buffering it whole.
func (p *Proxy) writeObject(w *recorder, r *http.Request, ts *config.Tileset, key string, obj *origin.Object) {
	h := w.Header()
	h.Set("Content-Type", contentType(obj.ContentType, key))
	if obj.ContentEncoding != "" {
		h.Set("Content-Encoding", obj.ContentEncoding)
	}
	if obj.ETag != "" {
		h.Set("Etag", obj.ETag)
	}
	if !obj.LastModified.IsZero() {
		h.Set("Last-Modified", httpTime(obj.LastModified))
	}
	h["Cache-Control"] = p.cacheControl[ts.Name]
	h["Accept-Ranges"] = hdrBytes
	h["X-Cache"] = hdrXCache[w.cache]
	h["X-Content-Type-Options"] = hdrNoSniff
	if obj.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(obj.Size, 10))
	}
	status := http.StatusOK
	if obj.ContentRange != "" {
		h.Set("Content-Range", obj.ContentRange)
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if obj.Body == nil || r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, obj.Body); err != nil {
		// Headers are gone; all that is left is to stop and say why.
		w.err = err
		p.log.DebugContext(r.Context(), "body copy stopped", "tileset", ts.Name, "err", err)
	}
}

// httpTime formats t for Last-Modified and friends.
func httpTime(t time.Time) string { return t.UTC().Format(http.TimeFormat) }
