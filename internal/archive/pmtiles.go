// This file is go-pmtiles v1.31.2's format code, copied unchanged but for
// this comment, the package name and two lint directives: the types, DeserializeHeader,
// DeserializeEntries, FindTile, ZxyToID and CreateTileJSON of
// github.com/protomaps/go-pmtiles/pmtiles (directory.go, tile_id.go,
// tilejson.go). Copyright 2021 Protomaps LLC, BSD 3-Clause licence in
// LICENSE-go-pmtiles.
//
// Why a copy rather than the import: that package also holds the pmtiles
// CLI's cloud buckets, MBTiles conversion and server, so importing it
// links GCS, Azure, gocloud, sqlite and more into tileproxy, which made
// the binary twice as large and broke the soak's memory bound (figures in
// bench/results/history-to-2026-12-02.md), and registers two gauges in Prometheus' global
// registry at init. TestMatchesGoPmtiles holds this copy to the module
// itself, which the tests import; replace the copy with the import once
// the format has a package of its own upstream.

package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Compression is the compression algorithm applied to individual tiles (or none)
type Compression uint8

const (
	//lint:ignore SA9004 kept as upstream has it (untyped): a copy, unchanged
	UnknownCompression Compression = 0
	NoCompression                  = 1
	Gzip                           = 2
	Brotli                         = 3
	Zstd                           = 4
)

// TileType is the format of individual tile contents in the archive.
type TileType uint8

const (
	//lint:ignore SA9004 kept as upstream has it (untyped): a copy, unchanged
	UnknownTileType TileType = 0
	Mvt                      = 1
	Png                      = 2
	Jpeg                     = 3
	Webp                     = 4
	Avif                     = 5
	Mlt                      = 6
)

// HeaderV3LenBytes is the fixed-size binary header size.
const HeaderV3LenBytes = 127

// HeaderV3 is a binary header for PMTiles specification version 3.
type HeaderV3 struct {
	SpecVersion         uint8
	RootOffset          uint64
	RootLength          uint64
	MetadataOffset      uint64
	MetadataLength      uint64
	LeafDirectoryOffset uint64
	LeafDirectoryLength uint64
	TileDataOffset      uint64
	TileDataLength      uint64
	AddressedTilesCount uint64
	TileEntriesCount    uint64
	TileContentsCount   uint64
	Clustered           bool
	InternalCompression Compression
	TileCompression     Compression
	TileType            TileType
	MinZoom             uint8
	MaxZoom             uint8
	MinLonE7            int32
	MinLatE7            int32
	MaxLonE7            int32
	MaxLatE7            int32
	CenterZoom          uint8
	CenterLonE7         int32
	CenterLatE7         int32
}

// EntryV3 is an entry in a PMTiles spec version 3 directory.
type EntryV3 struct {
	TileID    uint64
	Offset    uint64
	Length    uint32
	RunLength uint32
}

func tileTypeToString(t TileType) string {
	switch t {
	case Mvt:
		return "mvt"
	case Png:
		return "png"
	case Jpeg:
		return "jpg"
	case Webp:
		return "webp"
	case Avif:
		return "avif"
	case Mlt:
		return "mlt"
	default:
		return ""
	}
}

func headerExt(header HeaderV3) string {
	base := tileTypeToString(header.TileType)
	if base == "" {
		return ""
	}
	return "." + base
}

func DeserializeEntries(data *bytes.Buffer, compression Compression) []EntryV3 {
	var reader io.Reader

	if compression == NoCompression {
		reader = data
	} else if compression == Gzip {
		reader, _ = gzip.NewReader(data)
	} else {
		panic("Compression not supported")
	}
	byteReader := bufio.NewReader(reader)

	numEntries, _ := binary.ReadUvarint(byteReader)

	// Preallocate the entries slice to the known count so the append loops below
	// do not repeatedly reallocate and copy the backing array as it grows.
	entries := make([]EntryV3, 0, numEntries)

	lastID := uint64(0)
	for i := uint64(0); i < numEntries; i++ {
		tmp, _ := binary.ReadUvarint(byteReader)
		entries = append(entries, EntryV3{lastID + tmp, 0, 0, 0})
		lastID = lastID + tmp
	}

	for i := uint64(0); i < numEntries; i++ {
		runLength, _ := binary.ReadUvarint(byteReader)
		entries[i].RunLength = uint32(runLength)
	}

	for i := uint64(0); i < numEntries; i++ {
		length, _ := binary.ReadUvarint(byteReader)
		entries[i].Length = uint32(length)
	}

	for i := uint64(0); i < numEntries; i++ {
		tmp, _ := binary.ReadUvarint(byteReader)
		if i > 0 && tmp == 0 {
			entries[i].Offset = entries[i-1].Offset + uint64(entries[i-1].Length)
		} else {
			entries[i].Offset = tmp - 1
		}
	}

	return entries
}

func FindTile(entries []EntryV3, tileID uint64) (EntryV3, bool) {
	m := 0
	n := len(entries) - 1
	for m <= n {
		k := (n + m) >> 1
		cmp := int64(tileID) - int64(entries[k].TileID)
		if cmp > 0 {
			m = k + 1
		} else if cmp < 0 {
			n = k - 1
		} else {
			return entries[k], true
		}
	}

	// at this point, m > n
	if n >= 0 {
		if entries[n].RunLength == 0 {
			return entries[n], true
		}
		if tileID-entries[n].TileID < uint64(entries[n].RunLength) {
			return entries[n], true
		}
	}
	return EntryV3{}, false
}

func DeserializeHeader(d []byte) (HeaderV3, error) {
	h := HeaderV3{}
	magicNumber := d[0:7]
	if string(magicNumber) != "PMTiles" {
		return h, fmt.Errorf("magic number not detected. confirm this is a PMTiles archive")
	}

	specVersion := d[7]
	if specVersion > uint8(3) {
		return h, fmt.Errorf("archive is spec version %d, but this program only supports version 3: upgrade your pmtiles program", specVersion)
	}

	h.SpecVersion = specVersion
	h.RootOffset = binary.LittleEndian.Uint64(d[8 : 8+8])
	h.RootLength = binary.LittleEndian.Uint64(d[16 : 16+8])
	h.MetadataOffset = binary.LittleEndian.Uint64(d[24 : 24+8])
	h.MetadataLength = binary.LittleEndian.Uint64(d[32 : 32+8])
	h.LeafDirectoryOffset = binary.LittleEndian.Uint64(d[40 : 40+8])
	h.LeafDirectoryLength = binary.LittleEndian.Uint64(d[48 : 48+8])
	h.TileDataOffset = binary.LittleEndian.Uint64(d[56 : 56+8])
	h.TileDataLength = binary.LittleEndian.Uint64(d[64 : 64+8])
	h.AddressedTilesCount = binary.LittleEndian.Uint64(d[72 : 72+8])
	h.TileEntriesCount = binary.LittleEndian.Uint64(d[80 : 80+8])
	h.TileContentsCount = binary.LittleEndian.Uint64(d[88 : 88+8])
	h.Clustered = (d[96] == 0x1)
	h.InternalCompression = Compression(d[97])
	h.TileCompression = Compression(d[98])
	h.TileType = TileType(d[99])
	h.MinZoom = d[100]
	h.MaxZoom = d[101]
	h.MinLonE7 = int32(binary.LittleEndian.Uint32(d[102 : 102+4]))
	h.MinLatE7 = int32(binary.LittleEndian.Uint32(d[106 : 106+4]))
	h.MaxLonE7 = int32(binary.LittleEndian.Uint32(d[110 : 110+4]))
	h.MaxLatE7 = int32(binary.LittleEndian.Uint32(d[114 : 114+4]))
	h.CenterZoom = d[118]
	h.CenterLonE7 = int32(binary.LittleEndian.Uint32(d[119 : 119+4]))
	h.CenterLatE7 = int32(binary.LittleEndian.Uint32(d[123 : 123+4]))

	return h, nil
}

func rotate(n uint32, x uint32, y uint32, rx uint32, ry uint32) (uint32, uint32) {
	if ry == 0 {
		if rx != 0 {
			x = n - 1 - x
			y = n - 1 - y
		}
		return y, x
	}
	return x, y
}

// ZxyToID converts (Z,X,Y) tile coordinates to a Hilbert TileID.
func ZxyToID(z uint8, x uint32, y uint32) uint64 {
	var acc uint64 = (1<<(z*2) - 1) / 3
	n := uint32(z - 1)
	for s := uint32(1 << n); s > 0; s >>= 1 {
		var rx = s & x
		var ry = s & y
		acc += uint64((3*rx)^ry) << n
		x, y = rotate(s, x, y, rx, ry)
		n--
	}
	return acc
}

// CreateTileJSON returns TileJSON from an archive header+metadata and a given public tileURL.
func CreateTileJSON(header HeaderV3, metadataBytes []byte, tileURL string) ([]byte, error) {
	var metadataMap map[string]interface{}
	json.Unmarshal(metadataBytes, &metadataMap)

	tilejson := make(map[string]interface{})

	tilejson["tilejson"] = "3.0.0"
	tilejson["scheme"] = "xyz"

	if tileURL == "" {
		tileURL = "https://example.com"
	}

	tilejson["tiles"] = []string{tileURL + "/{z}/{x}/{y}" + headerExt(header)}
	if ok := header.TileType == Mvt; ok {
		tilejson["vector_layers"] = metadataMap["vector_layers"]
	}

	if val, ok := metadataMap["attribution"]; ok {
		tilejson["attribution"] = val
	}

	if val, ok := metadataMap["description"]; ok {
		tilejson["description"] = val
	}

	if val, ok := metadataMap["name"]; ok {
		tilejson["name"] = val
	}

	if val, ok := metadataMap["version"]; ok {
		tilejson["version"] = val
	}

	E7 := 10000000.0
	tilejson["bounds"] = []float64{float64(header.MinLonE7) / E7, float64(header.MinLatE7) / E7, float64(header.MaxLonE7) / E7, float64(header.MaxLatE7) / E7}
	tilejson["center"] = []interface{}{float64(header.CenterLonE7) / E7, float64(header.CenterLatE7) / E7, header.CenterZoom}
	tilejson["minzoom"] = header.MinZoom
	tilejson["maxzoom"] = header.MaxZoom

	return json.MarshalIndent(tilejson, "", "\t")
}
