package proxy

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// The viewer page and Leaflet (vendored from npm, with its licence).
//
//go:embed viewer/index.html viewer/vendor/leaflet
var viewerFS embed.FS

var viewerTmpl = template.Must(template.ParseFS(viewerFS, "viewer/index.html"))

// viewerAssets are the files served under /viewer/.
var viewerAssets = map[string]struct{ path, contentType string }{
	"leaflet.js":  {"viewer/vendor/leaflet/leaflet.js", "text/javascript; charset=utf-8"},
	"leaflet.css": {"viewer/vendor/leaflet/leaflet.css", "text/css; charset=utf-8"},
	"LICENSE":     {"viewer/vendor/leaflet/LICENSE", "text/plain; charset=utf-8"},
}

// viewerModTime stamps the embedded files (embed keeps no times); the
// vendored versions change only with a release.
var viewerModTime = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

const viewerCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:"

// serveViewer renders the built-in Leaflet viewer. It lists the configured
// raster tileset names (not their buckets), which is why it is opt-in.
func (p *Proxy) serveViewer(w *recorder, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.fail(errMethod, tileMethods)
		return
	}
	var buf bytes.Buffer
	if err := viewerTmpl.Execute(&buf, p.cfg.Tilesets); err != nil {
		w.fail(err, "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", viewerCSP)
	w.Write(buf.Bytes())
}

// serveViewerAsset serves the vendored Leaflet files.
func (p *Proxy) serveViewerAsset(w *recorder, r *http.Request) {
	a, ok := viewerAssets[strings.TrimPrefix(r.URL.Path, "/viewer/")]
	if !ok || !p.cfg.Viewer {
		w.fail(errNotFound, "")
		return
	}
	b, err := viewerFS.ReadFile(a.path)
	if err != nil {
		w.fail(err, "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", viewerModTime, bytes.NewReader(b))
}
