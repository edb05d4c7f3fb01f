package proxy

import "net/http"

// Header values for CORS answers, ready to assign.
var (
	hdrVaryOrigin    = []string{"Origin"}
	hdrTrue          = []string{"true"}
	hdrStar          = []string{"*"}
	hdrExposeHeaders = []string{"ETag, X-Cache, Content-Length, Content-Range, WWW-Authenticate"}
	hdrAllowMethods  = []string{"GET, HEAD, POST, DELETE"}
	hdrAllowHeaders  = []string{"Authorization, Range, If-None-Match, If-Modified-Since"}
	hdrMaxAge        = []string{"600"}
)

// cors lets map pages on other origins use tileproxy. Exact origins get
// credentials (the session cookie); "*" admits any origin without them,
// as the Fetch standard requires.
type cors struct {
	origins map[string][]string // allowed origin -> its header value
	any     bool
}

// newCORS returns nil when no origins are configured: no CORS headers at all.
func newCORS(allowed []string) *cors {
	if len(allowed) == 0 {
		return nil
	}
	c := &cors{origins: map[string][]string{}}
	for _, o := range allowed {
		if o == "*" {
			c.any = true
			continue
		}
		c.origins[o] = []string{o}
	}
	return c
}

// exact returns origin's header value when it is listed exactly (not
// by "*"), the only origins that get credentials.
func (c *cors) exact(origin string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	v, ok := c.origins[origin]
	return v, ok
}

// allow sets the headers that let origin read the answer. It runs before
// routing, so error answers (401, 403) are readable by the page too.
func (c *cors) allow(h http.Header, origin string) (ok bool) {
	if c == nil {
		return false
	}
	h["Vary"] = hdrVaryOrigin // answers differ by Origin, for every cache
	if origin == "" {
		return false
	}
	if v, exact := c.origins[origin]; exact {
		h["Access-Control-Allow-Origin"] = v
		h["Access-Control-Allow-Credentials"] = hdrTrue
	} else if c.any {
		h["Access-Control-Allow-Origin"] = hdrStar
	} else {
		return false
	}
	h["Access-Control-Expose-Headers"] = hdrExposeHeaders
	return true
}

// preflight answers a CORS preflight (OPTIONS with
// Access-Control-Request-Method) and reports whether it did. Preflights
// carry no credentials, so they are answered before any token check.
func (c *cors) preflight(w *recorder, r *http.Request) bool {
	if r.Method != http.MethodOptions || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h := w.Header()
	if !c.allow(h, r.Header.Get("Origin")) {
		w.fail(errOriginNotAllowed, "")
		return true
	}
	delete(h, "Access-Control-Expose-Headers")
	h["Access-Control-Allow-Methods"] = hdrAllowMethods
	h["Access-Control-Allow-Headers"] = hdrAllowHeaders
	h["Access-Control-Max-Age"] = hdrMaxAge
	w.WriteHeader(http.StatusNoContent)
	return true
}
