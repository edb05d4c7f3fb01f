// Package archivetest writes PMTiles archives for tests, the benchmark and
// the demo's world tiles, with go-pmtiles' own serializers: raster or
// vector, clustered or not, with or without leaf directories.
package archivetest

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/protomaps/go-pmtiles/pmtiles"
)

// Options shape an archive.
type Options struct {
	TileType        pmtiles.TileType
	TileCompression pmtiles.Compression // NoCompression when 0
	// Gzip compresses directories and metadata (the writer's default).
	Gzip bool
	// Unclustered writes tile data in reverse tile-id order (the header
	// then says so); clustered archives keep tile-id order.
	Unclustered bool
	// Leaves puts every entry in leaf directories below a root of leaf
	// pointers.
	Leaves   bool
	Metadata map[string]any
	MinZoom  uint8
	MaxZoom  uint8
}

// Build writes an archive holding tiles (by z/x/y). Identical contents
// of consecutive tile ids share one run.
func Build(tiles map[pmtiles.Zxy][]byte, o Options) []byte {
	type tile struct {
		id   uint64
		data []byte
	}
	var list []tile
	for k, v := range tiles {
		list = append(list, tile{pmtiles.ZxyToID(k.Z, k.X, k.Y), v})
	}
	slices.SortFunc(list, func(a, b tile) int { return cmp.Compare(a.id, b.id) })
	order := slices.Clone(list)
	if o.Unclustered {
		slices.Reverse(order)
	}
	var data bytes.Buffer
	offsets := map[uint64]uint64{}
	for _, t := range order {
		offsets[t.id] = uint64(data.Len())
		data.Write(t.data)
	}
	var entries []pmtiles.EntryV3
	var lastData []byte
	for _, t := range list {
		if n := len(entries); n > 0 && !o.Unclustered {
			last := &entries[n-1]
			if last.TileID+uint64(last.RunLength) == t.id && bytes.Equal(lastData, t.data) {
				last.RunLength++
				continue
			}
		}
		entries = append(entries, pmtiles.EntryV3{TileID: t.id, Offset: offsets[t.id], Length: uint32(len(t.data)), RunLength: 1})
		lastData = t.data
	}
	var comp pmtiles.Compression = pmtiles.NoCompression
	if o.Gzip {
		comp = pmtiles.Gzip
	}
	target := 16384 - pmtiles.HeaderV3LenBytes
	if o.Leaves {
		target = 40 // too small for the entries: leaves it is
	}
	root, leaves, _ := pmtiles.BuildDirectories(entries, target, comp)
	meta, err := pmtiles.SerializeMetadata(o.Metadata, comp)
	if err != nil {
		panic(err)
	}
	h := pmtiles.HeaderV3{
		SpecVersion: 3, RootOffset: pmtiles.HeaderV3LenBytes, RootLength: uint64(len(root)),
		TileEntriesCount: uint64(len(entries)), AddressedTilesCount: uint64(len(list)), TileContentsCount: uint64(len(list)),
		Clustered: !o.Unclustered, InternalCompression: comp, TileCompression: o.TileCompression, TileType: o.TileType,
		MinZoom: o.MinZoom, MaxZoom: o.MaxZoom, MinLonE7: -180e7, MinLatE7: -85e7, MaxLonE7: 180e7, MaxLatE7: 85e7,
		CenterZoom: o.MinZoom,
	}
	if h.TileCompression == 0 {
		h.TileCompression = pmtiles.NoCompression
	}
	h.MetadataOffset = h.RootOffset + h.RootLength
	h.MetadataLength = uint64(len(meta))
	h.LeafDirectoryOffset = h.MetadataOffset + h.MetadataLength
	h.LeafDirectoryLength = uint64(len(leaves))
	h.TileDataOffset = h.LeafDirectoryOffset + h.LeafDirectoryLength
	h.TileDataLength = uint64(data.Len())
	var out bytes.Buffer
	out.Write(pmtiles.SerializeHeader(h))
	out.Write(root)
	out.Write(meta)
	out.Write(leaves)
	out.Write(data.Bytes())
	return out.Bytes()
}

// Pyramid is every tile of zooms 0 to maxZ, each holding "version z/x/y":
// a tile served from the wrong place, or from another version of the
// archive, says so.
func Pyramid(maxZ uint8, version string) map[pmtiles.Zxy][]byte {
	m := map[pmtiles.Zxy][]byte{}
	for z := uint8(0); z <= maxZ; z++ {
		for x := uint32(0); x < 1<<z; x++ {
			for y := uint32(0); y < 1<<z; y++ {
				m[pmtiles.Zxy{Z: z, X: x, Y: y}] = fmt.Appendf(nil, "%s %d/%d/%d", version, z, x, y)
			}
		}
	}
	return m
}
