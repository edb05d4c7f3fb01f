// Package archive reads PMTiles v3 archives defensively. The format is
// decoded by go-pmtiles' own code (pmtiles.go: a copy, and why), and what
// that code trusts (a header long enough, a supported compression, an
// entry count that fits the bytes, offsets inside the object, a directory
// tree that ends) is checked here first, so a hostile or broken archive is
// an error, never a panic, a hang or unbounded memory.
package archive

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrBroken matches every error about an archive's bytes.
var ErrBroken = errors.New("broken PMTiles archive")

func broken(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBroken, fmt.Sprintf(format, args...))
}

// HeadBytes is what the first read of an archive asks for: the header and,
// in every archive written to the spec, the root directory.
const HeadBytes = 16384

// MaxDirectoryBytes bounds one directory, compressed or not: a leaf of
// the go-pmtiles writer holds at most a few hundred KiB.
const MaxDirectoryBytes = 8 << 20

// MaxMetadataBytes bounds the JSON metadata.
const MaxMetadataBytes = 4 << 20

// MaxDepth is how many directories a lookup may pass through: the root
// and leaves below it. A deeper chain is a cycle or an attack.
const MaxDepth = 4

// Header decodes and checks an archive's header: size is the whole
// object's length.
func Header(b []byte, size int64) (HeaderV3, error) {
	if len(b) < HeaderV3LenBytes {
		return HeaderV3{}, broken("%d bytes, shorter than a header", len(b))
	}
	if string(b[:7]) != "PMTiles" {
		return HeaderV3{}, broken("no PMTiles magic number")
	}
	if b[7] != 3 {
		return HeaderV3{}, broken("spec version %d, not 3", b[7])
	}
	h, err := DeserializeHeader(b)
	if err != nil {
		return h, fmt.Errorf("%w: %w", ErrBroken, err)
	}
	for _, c := range []Compression{h.InternalCompression} {
		if c != NoCompression && c != Gzip {
			return h, broken("internal compression %d is not supported (none or gzip)", c)
		}
	}
	for _, s := range []struct {
		name        string
		off, length uint64
	}{
		{"root directory", h.RootOffset, h.RootLength},
		{"metadata", h.MetadataOffset, h.MetadataLength},
		{"leaf directories", h.LeafDirectoryOffset, h.LeafDirectoryLength},
		{"tile data", h.TileDataOffset, h.TileDataLength},
	} {
		if !inside(s.off, s.length, uint64(size)) {
			return h, broken("%s at %d+%d lies beyond the object's %d bytes", s.name, s.off, s.length, size)
		}
	}
	if h.RootLength == 0 || h.RootLength > MaxDirectoryBytes {
		return h, broken("root directory of %d bytes", h.RootLength)
	}
	return h, nil
}

// inside reports whether [off, off+n) fits in size bytes, without
// overflowing.
func inside(off, n, size uint64) bool { return off <= size && n <= size-off }

// Directory decodes one directory. Its entries are checked against the
// header: leaf pointers must lie in the leaf section, tiles in the tile
// data, and tile ids must ascend.
func Directory(b []byte, h HeaderV3) ([]EntryV3, error) {
	raw, err := decompress(b, h.InternalCompression, MaxDirectoryBytes)
	if err != nil {
		return nil, err
	}
	// go-pmtiles allocates and loops on the count it reads: every entry
	// takes at least four bytes, so a count the bytes cannot hold is a lie.
	n, k := binary.Uvarint(raw)
	if k <= 0 || n > uint64(len(raw)-k)/4 {
		return nil, broken("directory claims %d entries in %d bytes", n, len(raw))
	}
	entries := DeserializeEntries(bytes.NewBuffer(raw), NoCompression)
	if uint64(len(entries)) != n {
		return nil, broken("directory holds %d entries, not %d", len(entries), n)
	}
	for i, e := range entries {
		if i > 0 && e.TileID <= entries[i-1].TileID {
			return nil, broken("directory entries out of order at %d", i)
		}
		if e.Length == 0 {
			return nil, broken("entry %d has length 0", i)
		}
		if e.RunLength == 0 {
			if !inside(e.Offset, uint64(e.Length), h.LeafDirectoryLength) {
				return nil, broken("leaf directory at %d+%d lies beyond the leaf section", e.Offset, e.Length)
			}
		} else if !inside(e.Offset, uint64(e.Length), h.TileDataLength) {
			return nil, broken("tile at %d+%d lies beyond the tile data", e.Offset, e.Length)
		}
		if e.RunLength > 0 && e.TileID+uint64(e.RunLength) < e.TileID {
			return nil, broken("run length overflows at entry %d", i)
		}
	}
	return entries, nil
}

// Metadata decompresses the metadata JSON.
func Metadata(b []byte, h HeaderV3) ([]byte, error) {
	return decompress(b, h.InternalCompression, MaxMetadataBytes)
}

// decompress undoes the archive's internal compression, reading at most
// max bytes (a gzip bomb stops there).
func decompress(b []byte, c Compression, max int) ([]byte, error) {
	switch c {
	case NoCompression:
		if len(b) > max {
			return nil, broken("%d bytes, over the %d bound", len(b), max)
		}
		return b, nil
	case Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrBroken, err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, int64(max)+1))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrBroken, err)
		}
		if len(out) > max {
			return nil, broken("decompresses to over %d bytes", max)
		}
		return out, nil
	}
	return nil, broken("compression %d is not supported", c)
}

// Find looks tileID up in entries: the tile's entry, or the leaf
// directory to look in next (leaf true), or nothing.
func Find(entries []EntryV3, tileID uint64) (e EntryV3, leaf, ok bool) {
	e, ok = FindTile(entries, tileID)
	if !ok {
		return e, false, false
	}
	return e, e.RunLength == 0, true
}

// TileFormat is what a tile type is served as: the URL extensions that
// name it, its Content-Type, and its Content-Encoding from the tile
// compression (passed through, never undone).
type TileFormat struct {
	Extensions  []string
	ContentType string
	Encoding    string
}

// Format is h's TileFormat.
func Format(h HeaderV3) (TileFormat, error) {
	var f TileFormat
	switch h.TileType {
	case Mvt:
		f = TileFormat{[]string{"mvt", "pbf"}, "application/vnd.mapbox-vector-tile", ""}
	case Png:
		f = TileFormat{[]string{"png"}, "image/png", ""}
	case Jpeg:
		f = TileFormat{[]string{"jpg", "jpeg"}, "image/jpeg", ""}
	case Webp:
		f = TileFormat{[]string{"webp"}, "image/webp", ""}
	case Avif:
		f = TileFormat{[]string{"avif"}, "image/avif", ""}
	default:
		return f, broken("tile type %d is not served (png, jpeg, webp, avif or mvt)", h.TileType)
	}
	switch h.TileCompression {
	case NoCompression, UnknownCompression:
	case Gzip:
		f.Encoding = "gzip"
	case Brotli:
		f.Encoding = "br"
	case Zstd:
		f.Encoding = "zstd"
	default:
		return f, broken("tile compression %d", h.TileCompression)
	}
	return f, nil
}
