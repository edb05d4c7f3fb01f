package proxy

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/proxy/core"
)

// The viewer page, Leaflet for raster tilesets and MapLibre GL for vector
// ones (both vendored from npm, with their licences).
//
//go:embed viewer/index.html viewer/vendor/leaflet viewer/vendor/maplibre-gl
var viewerFS embed.FS

var viewerTmpl = template.Must(template.ParseFS(viewerFS, "viewer/index.html"))

// viewerAssets are the files served under /viewer/.
var viewerAssets = map[string]struct{ path, contentType string }{
	"leaflet.js":  {"viewer/vendor/leaflet/leaflet.js", "text/javascript; charset=utf-8"},
	"leaflet.css": {"viewer/vendor/leaflet/leaflet.css", "text/css; charset=utf-8"},
	"LICENSE":     {"viewer/vendor/leaflet/LICENSE", "text/plain; charset=utf-8"},

	"maplibre-gl.js":      {"viewer/vendor/maplibre-gl/maplibre-gl.js", "text/javascript; charset=utf-8"},
	"maplibre-gl.css":     {"viewer/vendor/maplibre-gl/maplibre-gl.css", "text/css; charset=utf-8"},
	"LICENSE-maplibre-gl": {"viewer/vendor/maplibre-gl/LICENSE.txt", "text/plain; charset=utf-8"},
}

// viewerModTime stamps the embedded files (embed keeps no times); the
// vendored versions change only with a release.
var viewerModTime = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// MapLibre GL runs its tile decoding in a worker it starts from a blob:
// URL, hence worker-src.
const viewerCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; worker-src 'self' blob:"

// renderViewer builds the viewer page and loads the vendored files, once:
// nothing in them changes while the process runs.
func renderViewer(tilesets []config.Tileset) (page []byte, files map[string][]byte, err error) {
	var buf bytes.Buffer
	if err := viewerTmpl.Execute(&buf, tilesets); err != nil {
		return nil, nil, fmt.Errorf("proxy: viewer page: %w", err)
	}
	files = make(map[string][]byte, len(viewerAssets))
	for name, a := range viewerAssets {
		if files[name], err = viewerFS.ReadFile(a.path); err != nil {
			return nil, nil, fmt.Errorf("proxy: viewer asset: %w", err)
		}
	}
	return buf.Bytes(), files, nil
}

// serveViewer serves the built-in viewer. It lists the configured
// tileset names (not their buckets), which is why it is opt-in.
func (p *Proxy) serveViewer(w *recorder, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.fail(errMethod, tileMethods)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", viewerCSP)
	w.Write(p.viewerPage)
}

// serveViewerAsset serves the vendored Leaflet and MapLibre files.
func (p *Proxy) serveViewerAsset(w *recorder, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/viewer/")
	b, ok := p.viewerFiles[name] // empty when the viewer is off
	if !ok {
		w.fail(core.ErrNotFound, "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", viewerAssets[name].contentType)
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", viewerModTime, bytes.NewReader(b))
}
