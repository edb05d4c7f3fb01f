package proxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/proxy/core"
)

// serveSession turns a Bearer token into an HttpOnly cookie (POST) or
// clears it (DELETE), so <img src> and map libraries authenticate without
// custom headers and tile URLs stay free of tokens.
func (p *Proxy) serveSession(w *recorder, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		// Only the Authorization header may open a session: a cookie
		// renewing itself, or a token in a URL, must not.
		if _, ok := r.Header["Authorization"]; !ok {
			w.fail(auth.ErrNoToken, "")
			return
		}
		if !p.sessionOrigin(r) {
			w.fail(errOriginNotAllowed, "")
			return
		}
		tok, err := p.verifier.TokenFromRequest(r)
		if err == nil {
			var pr *auth.Principal
			if pr, err = p.verifier.Verify(r.Context(), tok); err == nil {
				maxAge := int(pr.Expires.Sub(p.now()).Seconds())
				if maxAge < 1 {
					maxAge = 1
				}
				http.SetCookie(w, p.cookie(tok, maxAge))
				w.Header().Set("Cache-Control", "no-store")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		w.fail(err, "")
	case http.MethodDelete:
		http.SetCookie(w, p.cookie("", -1))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	default:
		w.fail(errMethod, "POST, DELETE")
	}
}

// sessionOrigin reports whether r may open a session: a request without
// Origin (not a browser's page), from tileproxy's own host, or from an
// origin listed exactly in cors.allowed_origins ("*" never counts).
// Browsers already refuse a cross-origin POST with Authorization unless
// the preflight allowed it with credentials; this holds even where a
// browser or an intermediary gets that wrong, so that no other site can
// plant its token as someone's session (login CSRF).
func (p *Proxy) sessionOrigin(r *http.Request) bool {
	origin, ok := r.Header["Origin"]
	if !ok {
		return true
	}
	if len(origin) != 1 {
		return false
	}
	u, err := url.Parse(origin[0])
	if err != nil || u.Host == "" {
		return false // includes "null": sandboxed frames, file pages
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	_, listed := p.cors.exact(origin[0])
	return listed
}

func (p *Proxy) cookie(value string, maxAge int) *http.Cookie {
	c := &http.Cookie{
		Name:     p.verifier.CookieName(),
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   p.cfg.Auth.Cookie.Secure,
		SameSite: http.SameSiteLaxMode,
	}
	switch p.cfg.Auth.Cookie.SameSite {
	case "strict":
		c.SameSite = http.SameSiteStrictMode
	case "none":
		c.SameSite = http.SameSiteNoneMode
	}
	return c
}

// serveTileJSON answers GET /tiles/{tileset}.json with the same
// authorization as the tiles themselves.
func (p *Proxy) serveTileJSON(w *recorder, r *http.Request) {
	name, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	if !ok {
		w.fail(core.ErrNotFound, "")
		return
	}
	_, grants, ok := p.tileRequest(w, r, name)
	if !ok {
		return
	}
	doc, cacheControl, etag, err := p.core.ScopedTileJSON(r.Context(), name, grants)
	if err != nil {
		w.fail(err, "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", cacheControl)
	h.Set("Etag", etag)
	if grants != nil {
		// Each principal's document is its own: no shared cache may
		// answer another principal with it.
		h.Set("Vary", "Authorization, Cookie")
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.Write(doc)
}
