package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Scope narrows a grant to part of a tileset (docs/entitlements.md). Each
// field left empty is unconstrained; the ones set all apply (zoom and bbox
// and any one of the areas). The same shape is read from configuration
// (grant rules) and from tokens (the grants claim as an object), and
// checked by Validate in both.
type Scope struct {
	// Zoom is a range "MIN-MAX" (or one zoom "N") within 0-30.
	Zoom string `yaml:"zoom" json:"zoom,omitempty"`
	// BBox is [west, south, east, north] in degrees; west > east crosses
	// the antimeridian.
	BBox []float64 `yaml:"bbox" json:"bbox,omitempty"`
	// Areas name areas of the configuration (Config.Areas).
	Areas []string `yaml:"areas" json:"areas,omitempty"`
	// Layers name the vector layers sent; empty sends every layer.
	Layers []string `yaml:"layers" json:"layers,omitempty"`
}

// Unconstrained reports a scope that allows the whole tileset.
func (s *Scope) Unconstrained() bool {
	return s.Zoom == "" && len(s.BBox) == 0 && len(s.Areas) == 0 && len(s.Layers) == 0
}

// MaxZoom is the deepest zoom a scope can name.
const MaxZoom = 30

// ZoomRange parses s.Zoom; an empty zoom is 0-MaxZoom.
func (s *Scope) ZoomRange() (lo, hi int, err error) {
	if s.Zoom == "" {
		return 0, MaxZoom, nil
	}
	return parseZoomRange(s.Zoom, MaxZoom)
}

// parseZoomRange reads "MIN-MAX" or "N" within 0-max.
func parseZoomRange(z string, max int) (lo, hi int, err error) {
	a, b, ok := strings.Cut(z, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 0 || hi < lo || hi > max {
		return 0, 0, fmt.Errorf("zoom %q is not a range like 0-8 within 0-%d", z, max)
	}
	return lo, hi, nil
}

// ErrBadScope is matched by every error of Scope.Validate.
var ErrBadScope = errors.New("bad scope")

// Validate checks the scope's shape; area reports whether an area name is
// configured (nil accepts none).
func (s *Scope) Validate(area func(string) bool) error {
	if _, _, err := s.ZoomRange(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadScope, err)
	}
	if len(s.BBox) != 0 {
		b := s.BBox
		if len(b) != 4 {
			return fmt.Errorf("%w: bbox needs four numbers [west, south, east, north], got %d", ErrBadScope, len(b))
		}
		for _, v := range b {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: bbox %v is not numbers", ErrBadScope, b)
			}
		}
		if b[0] < -180 || b[0] > 180 || b[2] < -180 || b[2] > 180 || b[1] < -90 || b[1] > 90 || b[3] < -90 || b[3] > 90 {
			return fmt.Errorf("%w: bbox %v is outside [-180, -90, 180, 90]", ErrBadScope, b)
		}
		if b[1] >= b[3] || b[0] == b[2] {
			return fmt.Errorf("%w: bbox %v is empty (south must be below north, west differ from east)", ErrBadScope, b)
		}
	}
	for _, a := range s.Areas {
		if area == nil || !area(a) {
			return fmt.Errorf("%w: no area %q is configured", ErrBadScope, a)
		}
	}
	for _, l := range s.Layers {
		if l == "" {
			return fmt.Errorf("%w: an empty layer name", ErrBadScope)
		}
	}
	return nil
}

// GrantValue is what one claim value of a grant rule grants: a tileset
// by name ("city", or "*" for every tileset), or a scoped grant
// ({tileset: city, zoom: "0-12", areas: [north], layers: [roads]}).
type GrantValue struct {
	Tileset string `yaml:"tileset"`
	Scope   `yaml:",inline"`
}

// UnmarshalYAML reads a tileset name or a scoped grant.
func (g *GrantValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*g = GrantValue{Tileset: n.Value}
		return nil
	}
	type plain GrantValue
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*g = GrantValue(p)
	return nil
}

// Grants is GrantValues for the named tilesets, unscoped.
func Grants(tilesets ...string) []GrantValue {
	out := make([]GrantValue, len(tilesets))
	for i, t := range tilesets {
		out[i] = GrantValue{Tileset: t}
	}
	return out
}
