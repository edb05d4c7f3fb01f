package core

import (
	"encoding/json"
	"strings"

	"github.com/tileproxy/tileproxy/config"
)

// tileJSON is the TileJSON 3.0.0 document for one tileset.
type tileJSON struct {
	TileJSON    string    `json:"tilejson"`
	Name        string    `json:"name"`
	Scheme      string    `json:"scheme"`
	Tiles       []string  `json:"tiles"`
	MinZoom     int       `json:"minzoom"`
	MaxZoom     int       `json:"maxzoom"`
	Bounds      []float64 `json:"bounds"`
	Attribution string    `json:"attribution,omitempty"`
	Format      string    `json:"format"`
}

// renderTileJSON builds ts's TileJSON document; it depends only on the
// config, so New renders each one once. An archive source will build its own from the archive's header and metadata.
func renderTileJSON(publicURL string, ts *config.Tileset) ([]byte, error) {
	base := strings.TrimRight(publicURL, "/")
	return json.Marshal(tileJSON{
		TileJSON:    "3.0.0",
		Name:        ts.Name,
		Scheme:      "xyz",
		Tiles:       []string{base + "/tiles/" + ts.Name + "/{z}/{x}/{y}." + ts.Format},
		MinZoom:     ts.MinZoom,
		MaxZoom:     ts.MaxZoom,
		Bounds:      ts.Bounds,
		Attribution: ts.Attribution,
		Format:      ts.Format,
	})
}
