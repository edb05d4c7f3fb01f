// Package mvt filters Mapbox Vector Tiles by layer at the protobuf wire
// level: a tile is a sequence of fields, its layers are field 3, and a
// layer's name is its field 1. Nothing else is decoded, so a layer's
// geometry and attributes pass through byte for byte.
package mvt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/protobuf/encoding/protowire"
)

// MaxInflated bounds a gzip'd tile's decompressed size: a tile bomb must
// not cost more.
const MaxInflated = 32 << 20

// ErrMalformed: the bytes are not a vector tile (or not gzip).
var ErrMalformed = errors.New("mvt: malformed tile")

const (
	tileLayers = 3 // Tile.layers
	layerName  = 1 // Layer.name
)

// Filter returns tile holding only the layers whose names are in keep
// (sorted), every other field of the tile kept as it was, and how many
// layers it kept.
func Filter(tile []byte, keep []string) ([]byte, int, error) {
	fields, kept, err := keptFields(tile, keep)
	if err != nil {
		return nil, 0, err
	}
	out := make([]byte, 0, len(tile))
	for _, f := range fields {
		out = append(out, f...)
	}
	return out, kept, nil
}

// keptFields are the fields of tile that a filtered tile holds, in order
// (slices of tile), and how many of them are layers.
func keptFields(tile []byte, keep []string) ([][]byte, int, error) {
	fields := make([][]byte, 0, 16) // a tile has a few fields: its layers
	kept := 0
	for b := tile; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(m))
		}
		field := b[: n+m : n+m]
		b = b[n+m:]
		if num != tileLayers {
			fields = append(fields, field)
			continue
		}
		if typ != protowire.BytesType {
			return nil, 0, fmt.Errorf("%w: layer of wire type %d", ErrMalformed, typ)
		}
		layer, _ := protowire.ConsumeBytes(field[n:])
		name, err := nameOf(layer)
		if err != nil {
			return nil, 0, err
		}
		if _, found := slices.BinarySearchFunc(keep, name, func(k string, name []byte) int { return strings.Compare(k, string(name)) }); found {
			fields = append(fields, field)
			kept++
		}
	}
	return fields, kept, nil
}

// nameOf is a layer's name (its field 1); the last one wins, as protobuf
// has it for a repeated scalar field.
func nameOf(layer []byte) ([]byte, error) {
	var name []byte
	seen := false
	for b := layer; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, protowire.ParseError(m))
		}
		if num == layerName {
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("%w: layer name of wire type %d", ErrMalformed, typ)
			}
			name, _ = protowire.ConsumeBytes(b[n:])
			seen = true
		}
		b = b[n+m:]
	}
	if !seen {
		return nil, fmt.Errorf("%w: a layer without a name", ErrMalformed)
	}
	return name, nil
}

// FilterEncoded is Filter for a tile as stored: gzip'd when gzipped is set
// (Content-Encoding: gzip), decompressed within MaxInflated, filtered and
// compressed again the same way.
func FilterEncoded(tile []byte, gzipped bool, keep []string) ([]byte, int, error) {
	if !gzipped {
		return Filter(tile, keep)
	}
	zr, _ := readers.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(tile))
	} else {
		err = zr.Reset(bytes.NewReader(tile))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	defer readers.Put(zr)
	in := inflated.Get().(*bytes.Buffer)
	defer func() {
		if in.Cap() <= maxPooled { // a tile bomb's buffer is not kept
			inflated.Put(in)
		}
	}()
	in.Reset()
	// Vector tiles inflate to a few times their gzip'd size: room for
	// that at once, instead of ReadAll's doublings.
	in.Grow(min(4*len(tile), MaxInflated))
	if _, err := in.ReadFrom(io.LimitReader(zr, MaxInflated+1)); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	raw := in.Bytes()
	if len(raw) > MaxInflated {
		return nil, 0, fmt.Errorf("%w: inflates past %d bytes", ErrMalformed, MaxInflated)
	}
	// The kept fields go to the deflater straight from the inflated
	// bytes: no filtered copy in between.
	fields, kept, err := keptFields(raw, keep)
	if err != nil || kept == 0 {
		return nil, kept, err
	}
	var buf bytes.Buffer
	buf.Grow(len(tile))
	zw := writers.Get().(*gzip.Writer)
	defer writers.Put(zw)
	zw.Reset(&buf)
	for _, f := range fields {
		zw.Write(f) // a bytes.Buffer takes every write
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), kept, nil
}

// Inflating and deflating state is large (a deflater is most of a MiB):
// reused, not made per tile. BestSpeed: a filtered variant is made once
// and cached, and tiles are mostly coordinates, which compress about as
// well at any level.
// maxPooled bounds the inflated buffers kept for reuse.
const maxPooled = 4 << 20

var (
	readers  sync.Pool
	inflated = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	writers  = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}
)
