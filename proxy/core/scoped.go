package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"
	"strings"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/mvt"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/scope"
)

// ErrOutsideGrant: the tile lies outside every scoped grant the principal
// holds for the tileset, or its path is not {z}/{x}/{y}.{ext} (403,
// error="outside_grant").
var ErrOutsideGrant = errors.New("outside grant")

// maxFilterBytes bounds a vector tile read whole to be filtered when it is
// over max_object_bytes (or nothing is cached).
const maxFilterBytes = 32 << 20

// layersSep starts the part of a filtered variant's cache key that names
// its layers; no object path holds a NUL.
const layersSep = "\x00layers="

// parseTilePath reads "{z}/{x}/{y}.{ext}" with z, x and y a tile, and
// reports whether the extension is a vector tile's. It runs on every
// scoped hit, so it scans the bytes once, by hand.
func parseTilePath(path string) (z uint8, x, y uint32, vector, ok bool) {
	var n [3]uint64
	i := 0
	for k := range n {
		start := i
		for i < len(path) && path[i] >= '0' && path[i] <= '9' {
			n[k] = n[k]*10 + uint64(path[i]-'0')
			if n[k] > 1<<32 {
				return 0, 0, 0, false, false
			}
			i++
		}
		sep := byte('/')
		if k == 2 {
			sep = '.'
		}
		if i == start || (i-start > 1 && path[start] == '0') || i >= len(path) || path[i] != sep {
			return 0, 0, 0, false, false
		}
		i++
	}
	ext := path[i:]
	if n[0] > config.MaxZoom || n[1] >= 1<<n[0] || n[2] >= 1<<n[0] || !plainExt(ext) {
		return 0, 0, 0, false, false
	}
	vector = len(ext) == 3 && (ext[0]|0x20 == 'p' && ext[1]|0x20 == 'b' && ext[2]|0x20 == 'f' ||
		ext[0]|0x20 == 'm' && ext[1]|0x20 == 'v' && ext[2]|0x20 == 't')
	return uint8(n[0]), uint32(n[1]), uint32(n[2]), vector, true
}

// plainExt reports whether ext is a file extension: not empty, no "/"
// and no ".".
func plainExt(ext string) bool {
	for i := range len(ext) {
		if ext[i] == '/' || ext[i] == '.' {
			return false
		}
	}
	return ext != ""
}

// scoped judges a scoped request before any cache or origin work: it
// reports a tile outside every grant (answered as the tileset's outside
// says), and for one inside, the layers to send (nil: the tile as it
// is). req is a pointer because this runs on every scoped hit.
func scoped(req *Request) (layers []string, in bool, err error) {
	z, x, y, vector, ok := parseTilePath(req.Path)
	if !ok {
		return nil, false, ErrOutsideGrant
	}
	allowed, layers := scope.Judge(req.Scope, z, x, y)
	if !allowed {
		return nil, false, nil
	}
	if !vector {
		layers = nil // raster tiles have no layers to take away
	}
	return layers, true, nil
}

// outside answers a tile outside the principal's grants: 204 with
// outside: empty (a map draws nothing), else ErrOutsideGrant.
func (c *Core) outside(ts *tileset) (Result, error) {
	if ts.cfg.Outside == config.OutsideEmpty {
		return Result{Status: StatusNoContent, Header: Header{CacheControl: ts.cacheControl}}, nil
	}
	return Result{}, ErrOutsideGrant
}

// getFiltered answers a vector tile holding only layers. The variant is
// cached under its own key (its own ETag); the origin's bytes stay cached
// once under theirs, so principals with different layer sets cost one
// GET. Everything (Range, HEAD, 304, stale answers) is judged on the
// variant: the origin's bytes never reach a layer-scoped principal.
func (c *Core) getFiltered(ctx context.Context, ts *tileset, req Request, layers []string) (Result, error) {
	fkey, err := ts.src.KeySuffixed(ctx, req.Path, layersSep, scope.LayerKey(layers))
	if err != nil {
		return Result{}, err
	}
	if c.cache == nil {
		e, err := ts.filter(ctx, fkey, nil)
		switch {
		case errors.Is(err, cache.ErrNotFound):
			return c.missing(ts, "MISS")
		case err != nil:
			return Result{Cache: "MISS"}, err
		case e.Len() == 0:
			return c.outside(ts)
		}
		return c.fromEntry(ts, *e, "MISS", req)
	}
	e, out, err := c.cache.Get(ctx, fkey, ts.filterLoad)
	if err == nil || !errors.Is(err, ctx.Err()) {
		c.metrics.Cache(out.String())
	}
	switch {
	case errors.Is(err, cache.ErrNotFound):
		return c.missing(ts, out.Header())
	case err != nil:
		return Result{Cache: out.Header()}, err
	case e.Len() == 0:
		e.Release()
		return c.outside(ts) // none of the granted layers is in this tile
	}
	return c.fromEntry(ts, e, out.Header(), req)
}

// filter builds the variant of the object under fkey's base key holding
// fkey's layers: from the cached object when there is a cache (a load
// that needs another cached object, under another key: it cannot wait on
// itself, and loads run on workers of their own, so it cannot deadlock),
// else read whole from the origin. An empty body stands for a tile that
// holds none of the layers. prev is the variant being revalidated: it is
// current while the object's ETag is the one it was made from.
func (ts *tileset) filter(ctx context.Context, fkey string, prev *cache.Entry) (*cache.Entry, error) {
	base, keyLayers, _ := strings.Cut(fkey, layersSep)
	layers := strings.Split(keyLayers, ",")
	body, meta, err := ts.whole(ctx, base)
	if err != nil {
		return nil, err
	}
	etag := filteredETag(meta.ETag, keyLayers)
	if prev != nil && prev.Meta().ETag == etag {
		return nil, cache.ErrNotModified
	}
	out, kept, err := mvt.FilterEncoded(body, meta.ContentEncoding == "gzip", layers)
	if err != nil {
		return nil, &origin.Error{Kind: origin.ErrUnavailable, Op: "vector tile layers", Err: err}
	}
	if kept == 0 {
		return cache.NewEntry(nil, cache.Meta{ETag: etag}), nil
	}
	return cache.NewEntry(out, renderMeta(meta.ContentType, meta.ContentEncoding, etag, meta.Modified, int64(len(out)))), nil
}

// whole is the object under key, read whole: from the cache, or from the
// origin within maxFilterBytes when it is not cached.
func (ts *tileset) whole(ctx context.Context, key string) ([]byte, cache.Meta, error) {
	if ts.cache != nil {
		e, _, err := ts.cache.Get(ctx, key, ts.load)
		if err != nil {
			return nil, cache.Meta{}, err
		}
		defer e.Release()
		if !e.Large() {
			b, err := io.ReadAll(e.NewRangeReader(0, e.Len()))
			return b, e.Meta(), err
		}
	}
	obj, err := ts.src.Open(ctx, key, Request{})
	switch {
	case errors.Is(err, origin.ErrNotFound):
		return nil, cache.Meta{}, cache.ErrNotFound
	case err != nil:
		return nil, cache.Meta{}, err
	}
	defer obj.Body.Close()
	if obj.Size > maxFilterBytes {
		return nil, cache.Meta{}, &origin.Error{Kind: origin.ErrUnavailable, Op: "vector tile layers",
			Err: fmt.Errorf("a tile of %d bytes is over the %d a layer filter reads", obj.Size, maxFilterBytes)}
	}
	b, err := io.ReadAll(io.LimitReader(obj.Body, maxFilterBytes+1))
	if err != nil {
		return nil, cache.Meta{}, &origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject body", Err: err}
	}
	if len(b) > maxFilterBytes {
		return nil, cache.Meta{}, &origin.Error{Kind: origin.ErrUnavailable, Op: "vector tile layers",
			Err: fmt.Errorf("a tile over the %d bytes a layer filter reads", maxFilterBytes)}
	}
	return b, renderMeta(contentType(obj.ContentType, key), obj.ContentEncoding, obj.ETag, obj.LastModified, int64(len(b))), nil
}

// filteredETag is a variant's ETag: the object's, and the layers, so it
// changes with either.
func filteredETag(etag, layers string) string {
	h := fnv.New64a()
	h.Write([]byte(layers))
	return `"` + strings.Trim(etag, `"`) + "-l" + strconv.FormatUint(h.Sum64(), 36) + `"`
}

// ScopedTileJSON is tileset name's TileJSON as a principal holding grants
// may see it: minzoom and maxzoom narrowed to the grants, bounds clipped
// to their boxes and areas, vector_layers only the granted ones. It is
// private to the principal (Cache-Control) and its ETag differs by what
// it says. Nil grants are TileJSON's document, with an ETag.
func (c *Core) ScopedTileJSON(ctx context.Context, name string, grants []scope.Grant) (doc []byte, cacheControl, etag string, err error) {
	doc, cacheControl, err = c.TileJSON(ctx, name)
	if err != nil {
		return nil, "", "", err
	}
	if grants != nil {
		if doc, err = narrowTileJSON(doc, scope.Narrow(grants)); err != nil {
			return nil, "", "", err
		}
		if !strings.Contains(cacheControl, "private") {
			cacheControl = "private, " + cacheControl
		}
	}
	sum := sha256.Sum256(doc)
	return doc, cacheControl, `"` + hex.EncodeToString(sum[:12]) + `"`, nil
}

// narrowTileJSON applies n to a TileJSON document.
func narrowTileJSON(doc []byte, n scope.Narrowed) ([]byte, error) {
	var tj map[string]any
	if err := json.Unmarshal(doc, &tj); err != nil {
		return nil, err
	}
	num := func(k string, def float64) float64 {
		if v, ok := tj[k].(float64); ok {
			return v
		}
		return def
	}
	lo, hi := max(num("minzoom", 0), float64(n.MinZoom)), min(num("maxzoom", 30), float64(n.MaxZoom))
	if hi < lo {
		hi = lo
	}
	tj["minzoom"], tj["maxzoom"] = lo, hi
	if n.Bounds != nil {
		b := n.Bounds
		if old, ok := tj["bounds"].([]any); ok && len(old) == 4 {
			f := func(i int) float64 { v, _ := old[i].(float64); return v }
			b = []float64{max(b[0], f(0)), max(b[1], f(1)), min(b[2], f(2)), min(b[3], f(3))}
			if b[0] > b[2] || b[1] > b[3] {
				b = []float64{n.Bounds[0], n.Bounds[1], n.Bounds[0], n.Bounds[1]}
			}
		}
		tj["bounds"] = b
		center := []float64{(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, lo}
		if old, ok := tj["center"].([]any); ok && len(old) == 3 {
			if z, ok := old[2].(float64); ok {
				center[2] = min(max(z, lo), hi)
			}
		}
		tj["center"] = center
	}
	if vl, ok := tj["vector_layers"].([]any); ok && !n.AllLayers {
		kept := []any{}
		for _, l := range vl {
			if m, ok := l.(map[string]any); ok {
				if id, _ := m["id"].(string); containsString(n.Layers, id) {
					kept = append(kept, l)
				}
			}
		}
		tj["vector_layers"] = kept
	}
	return json.Marshal(tj)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
