package proxy

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

const tileMethods = "GET, HEAD"

// serveTile answers GET/HEAD /tiles/{tileset}/{path...}.
func (p *Proxy) serveTile(w *recorder, r *http.Request) {
	name, rest := r.PathValue("tileset"), r.PathValue("path")
	w.tileset = p.label(name)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.fail(errMethod, tileMethods)
		return
	}
	ts, _, err := p.authorize(w, r, name)
	if err != nil {
		w.fail(err, "")
		return
	}
	key := ts.Prefix + rest
	if err := checkKey(key); err != nil {
		w.fail(err, "")
		return
	}
	req := origin.Request{
		Tileset:  ts.Name,
		Bucket:   ts.Bucket,
		Key:      key,
		HeadOnly: r.Method == http.MethodHead,
	}
	// Conditionals and Range go to S3 as they are; it answers 304/206/416.
	req.IfNoneMatch = r.Header.Get("If-None-Match")
	if req.IfNoneMatch == "" {
		if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil {
			req.IfModifiedSince = t
		}
	}
	if !req.HeadOnly {
		req.Range = r.Header.Get("Range")
	}

	start := p.now()
	obj, err := p.fetcher.Get(r.Context(), req)
	p.metrics.Origin(ts.Name, originResult(err), p.now().Sub(start))
	w.cache = "MISS"
	switch {
	case err == nil:
		if obj.Body != nil {
			defer obj.Body.Close()
		}
		p.writeObject(w, r, ts, key, obj)
	case errors.Is(err, origin.ErrNotModified):
		h := w.Header()
		h.Set("Cache-Control", ts.CacheControl)
		if inm := r.Header.Get("If-None-Match"); inm != "" && len(inm) < 200 {
			h.Set("Etag", inm)
		}
		w.WriteHeader(http.StatusNotModified)
	case errors.Is(err, origin.ErrNotFound) && ts.Missing == config.MissingEmpty:
		w.Header().Set("Cache-Control", ts.CacheControl)
		w.WriteHeader(http.StatusNoContent)
	default:
		if code, _ := errorStatus(err); code >= 500 && code != StatusClientClosed {
			p.log.WarnContext(r.Context(), "origin request failed", "tileset", ts.Name, "err", err)
		}
		w.fail(err, "")
	}
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
	h.Set("Cache-Control", ts.CacheControl)
	h.Set("Accept-Ranges", "bytes")
	h.Set("X-Cache", w.cache)
	h.Set("X-Content-Type-Options", "nosniff")
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
