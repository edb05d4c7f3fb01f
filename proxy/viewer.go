package proxy

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
)

//go:embed viewer/index.html
var viewerFS embed.FS

var viewerTmpl = template.Must(template.ParseFS(viewerFS, "viewer/index.html"))

// serveViewer renders the built-in viewer. It lists the configured
// tileset names (not their buckets), which is why it is opt-in.
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
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'; img-src 'self' data: blob:")
	w.Write(buf.Bytes())
}
