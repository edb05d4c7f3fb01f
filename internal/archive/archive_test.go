package archive_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/internal/archive"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
)

// lookup finds every tile of arc through Header, Directory and Find, as
// the proxy does, and returns their bodies.
func lookup(t *testing.T, arc []byte, tiles map[pmtiles.Zxy][]byte) {
	t.Helper()
	h, err := archive.Header(arc, int64(len(arc)))
	if err != nil {
		t.Fatal(err)
	}
	root, err := archive.Directory(arc[h.RootOffset:h.RootOffset+h.RootLength], h)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range tiles {
		dir := root
		var got []byte
		for depth := 0; depth < archive.MaxDepth && got == nil; depth++ {
			e, leaf, ok := archive.Find(dir, pmtiles.ZxyToID(k.Z, k.X, k.Y))
			if !ok {
				t.Fatalf("%v not found", k)
			}
			if !leaf {
				off := h.TileDataOffset + e.Offset
				got = arc[off : off+uint64(e.Length)]
				break
			}
			off := h.LeafDirectoryOffset + e.Offset
			if dir, err = archive.Directory(arc[off:off+uint64(e.Length)], h); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%v: %q, want %q", k, got, want)
		}
	}
}

// TestRoundTrip: archives of every shape the tests build read back tile
// for tile.
func TestRoundTrip(t *testing.T) {
	tiles := archivetest.Pyramid(6, "v1") // 5,461 tiles: two leaves when leaves are asked for
	for _, o := range []archivetest.Options{
		{TileType: pmtiles.Png},
		{TileType: pmtiles.Png, Gzip: true, Leaves: true},
		{TileType: pmtiles.Mvt, TileCompression: pmtiles.Gzip, Gzip: true, Unclustered: true},
		{TileType: pmtiles.Mvt, Unclustered: true, Leaves: true},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			lookup(t, archivetest.Build(tiles, o), tiles)
		})
	}
}

// TestHostile: broken archives are errors matching ErrBroken, never a
// panic, a hang or a huge allocation.
func TestHostile(t *testing.T) {
	good := archivetest.Build(archivetest.Pyramid(2, "v1"), archivetest.Options{TileType: pmtiles.Png})
	h, _ := archive.Header(good, int64(len(good)))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		arc  []byte
		size int64
	}{
		{"truncated header", good[:100], 100},
		{"wrong magic", mod(func(b []byte) []byte { copy(b, "PMTilez"); return b }), -1},
		{"version 2", mod(func(b []byte) []byte { b[7] = 2; return b }), -1},
		{"version 4", mod(func(b []byte) []byte { b[7] = 4; return b }), -1},
		{"root beyond the object", mod(func(b []byte) []byte { le.PutUint64(b[8:], 1<<40); return b }), -1},
		{"root length overflows", mod(func(b []byte) []byte { le.PutUint64(b[16:], ^uint64(0)-5); return b }), -1},
		{"tile data beyond the object", mod(func(b []byte) []byte { le.PutUint64(b[64:], 1<<50); return b }), -1},
		{"internal compression brotli", mod(func(b []byte) []byte { b[97] = byte(pmtiles.Brotli); return b }), -1},
		{"object shorter than said", good, int64(h.TileDataOffset)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size < 0 {
				size = int64(len(tc.arc))
			}
			if _, err := archive.Header(tc.arc, size); !errors.Is(err, archive.ErrBroken) {
				t.Fatalf("got %v, want ErrBroken", err)
			}
		})
	}
	dirs := []struct {
		name string
		dir  []byte
	}{
		{"empty", nil},
		{"a count of 2^62", binary.AppendUvarint(nil, 1<<62)},
		{"a count the bytes cannot hold", append(binary.AppendUvarint(nil, 1000), 1, 2, 3, 4)},
		{"gzip header only", []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}},
		{"tile beyond the tile data", entries(pmtiles.EntryV3{TileID: 0, Offset: h.TileDataLength, Length: 10, RunLength: 1})},
		{"leaf beyond the leaf section", entries(pmtiles.EntryV3{TileID: 0, Offset: 0, Length: 10, RunLength: 0})},
		{"ids out of order", entries(pmtiles.EntryV3{TileID: 5, Offset: 0, Length: 1, RunLength: 1}, pmtiles.EntryV3{TileID: 3, Offset: 1, Length: 1, RunLength: 1})},
		{"zero length", entries(pmtiles.EntryV3{TileID: 0, Offset: 0, Length: 0, RunLength: 1})},
		{"run length overflows", entries(pmtiles.EntryV3{TileID: ^uint64(0) - 2, Offset: 0, Length: 1, RunLength: 100})},
	}
	for _, tc := range dirs {
		t.Run("directory "+tc.name, func(t *testing.T) {
			hh := h
			hh.InternalCompression = pmtiles.NoCompression
			if tc.name == "gzip header only" {
				hh.InternalCompression = pmtiles.Gzip
			}
			if _, err := archive.Directory(tc.dir, hh); !errors.Is(err, archive.ErrBroken) {
				t.Fatalf("got %v, want ErrBroken", err)
			}
		})
	}
	// A gzip bomb: a directory that inflates past the bound.
	var bomb bytes.Buffer
	zw := gzipWriter(&bomb)
	zw.Write(make([]byte, archive.MaxDirectoryBytes+1))
	zw.Close()
	hh := h
	hh.InternalCompression = pmtiles.Gzip
	if _, err := archive.Directory(bomb.Bytes(), hh); !errors.Is(err, archive.ErrBroken) {
		t.Fatalf("gzip bomb: %v", err)
	}
}

func entries(es ...pmtiles.EntryV3) []byte {
	// SerializeEntries writes offsets relative to the previous entry when
	// contiguous; write them by hand to keep every field as given.
	b := binary.AppendUvarint(nil, uint64(len(es)))
	var last uint64
	for _, e := range es {
		b = binary.AppendUvarint(b, e.TileID-last)
		last = e.TileID
	}
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.RunLength))
	}
	for _, e := range es {
		b = binary.AppendUvarint(b, uint64(e.Length))
	}
	for _, e := range es {
		b = binary.AppendUvarint(b, e.Offset+1)
	}
	return b
}

// FuzzDirectory: any bytes as a directory, plain or gzip'd, decode to
// checked entries or ErrBroken, within the bounds.
func FuzzDirectory(f *testing.F) {
	good := archivetest.Build(archivetest.Pyramid(3, "v1"), archivetest.Options{TileType: pmtiles.Png, Leaves: true})
	h, _ := archive.Header(good, int64(len(good)))
	f.Add(good[h.RootOffset:h.RootOffset+h.RootLength], false)
	f.Add(good[h.LeafDirectoryOffset:h.LeafDirectoryOffset+h.LeafDirectoryLength], false)
	f.Add(entries(pmtiles.EntryV3{TileID: 1, Offset: 0, Length: 5, RunLength: 3}), false)
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0}, true)
	f.Fuzz(func(t *testing.T, dir []byte, gz bool) {
		hh := h
		hh.InternalCompression = pmtiles.NoCompression
		if gz {
			hh.InternalCompression = pmtiles.Gzip
		}
		es, err := archive.Directory(dir, hh)
		if err != nil {
			if !errors.Is(err, archive.ErrBroken) {
				t.Fatalf("error %v is not ErrBroken", err)
			}
			return
		}
		for _, e := range es {
			limit := hh.TileDataLength
			if e.RunLength == 0 {
				limit = hh.LeafDirectoryLength
			}
			if e.Offset+uint64(e.Length) > limit {
				t.Fatalf("entry %+v passed beyond %d", e, limit)
			}
			archive.Find(es, e.TileID)
		}
	})
}

// FuzzHeader: any first bytes decode to a checked header or ErrBroken.
func FuzzHeader(f *testing.F) {
	good := archivetest.Build(archivetest.Pyramid(1, "v1"), archivetest.Options{TileType: pmtiles.Png})
	f.Add(good[:127], int64(len(good)))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		if size < 0 {
			return
		}
		h, err := archive.Header(b, size)
		if err != nil {
			if !errors.Is(err, archive.ErrBroken) {
				t.Fatalf("error %v is not ErrBroken", err)
			}
			return
		}
		if h.TileDataOffset+h.TileDataLength > uint64(size) || h.RootOffset+h.RootLength > uint64(size) {
			t.Fatalf("header passed with sections beyond %d: %+v", size, h)
		}
	})
}

func gzipWriter(w *bytes.Buffer) *gzip.Writer { return gzip.NewWriter(w) }
