// Package tilegen draws the sample tileset: 256-pixel PNG tiles, each
// labelled with its z/x/y so a wrong or shifted tile is obvious on a map,
// and small gzip'd Mapbox Vector Tiles. The demo seeds its in-process S3
// from it and `go generate` writes the same tiles to testdata/.
package tilegen

//go:generate go run ../../tools/tilegen -out ../../testdata

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// TileSize is the edge of a raster tile in pixels.
const TileSize = 256

// PNG draws tile z/x/y.
func PNG(z, x, y int) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, TileSize, TileSize))
	// A calm, distinct colour per tile; neighbours differ so seams show.
	h := float64((x*37+y*91+z*53)%360) / 360
	bg := hsl(h, 0.45, 0.78)
	draw.Draw(img, img.Bounds(), &image.Uniform{bg}, image.Point{}, draw.Src)
	line := hsl(h, 0.5, 0.45)
	for i := 0; i < TileSize; i++ {
		for _, p := range [][2]int{{i, 0}, {i, TileSize - 1}, {0, i}, {TileSize - 1, i}} {
			img.Set(p[0], p[1], line)
		}
		// a graticule every 64 px, dotted
		if i%4 == 0 {
			for _, c := range []int{64, 128, 192} {
				img.Set(c, i, line)
				img.Set(i, c, line)
			}
		}
	}
	label := fmt.Sprintf("%d/%d/%d", z, x, y)
	text(img, label, 4, TileSize/2-20, color.RGBA{0x1f, 0x2a, 0x33, 0xff})
	text(img, "tileproxy", 2, TileSize-40, color.RGBA{0x1f, 0x2a, 0x33, 0xb0})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// text draws s centred horizontally at top y, scaled by an integer factor
// from the 7x13 bitmap font (crisp at any scale, no font files needed).
func text(dst *image.RGBA, s string, scale, y int, c color.Color) {
	face := basicfont.Face7x13
	w := font.MeasureString(face, s).Ceil()
	small := image.NewAlpha(image.Rect(0, 0, w, 13))
	d := &font.Drawer{Dst: small, Src: image.Opaque, Face: face, Dot: fixed.P(0, 10)}
	d.DrawString(s)
	x0 := (TileSize - w*scale) / 2
	src := image.NewUniform(c)
	for sy := 0; sy < 13; sy++ {
		for sx := 0; sx < w; sx++ {
			if small.AlphaAt(sx, sy).A > 0x80 {
				r := image.Rect(x0+sx*scale, y+sy*scale, x0+(sx+1)*scale, y+(sy+1)*scale)
				draw.Draw(dst, r, src, image.Point{}, draw.Over)
			}
		}
	}
}

func hsl(h, s, l float64) color.RGBA {
	hue := func(p, q, t float64) float64 {
		if t < 0 {
			t++
		}
		if t > 1 {
			t--
		}
		switch {
		case t < 1.0/6:
			return p + (q-p)*6*t
		case t < 0.5:
			return q
		case t < 2.0/3:
			return p + (q-p)*(2.0/3-t)*6
		}
		return p
	}
	q := l * (1 + s)
	if l >= 0.5 {
		q = l + s - l*s
	}
	p := 2*l - q
	return color.RGBA{uint8(255 * hue(p, q, h+1.0/3)), uint8(255 * hue(p, q, h)), uint8(255 * hue(p, q, h-1.0/3)), 0xff}
}

// MVT returns a gzip'd Mapbox Vector Tile for z/x/y: one layer "tiles"
// holding the tile's outline as a polygon with a "zxy" property.
func MVT(z, x, y int) ([]byte, error) {
	zz := func(v int32) uint32 { return uint32((v << 1) ^ (v >> 31)) }
	cmd := func(id, count uint32) uint32 { return id&7 | count<<3 }
	geom := []uint32{
		cmd(1, 1), zz(512), zz(512), // MoveTo
		cmd(2, 3), zz(3072), zz(0), zz(0), zz(3072), zz(-3072), zz(0), // LineTo ×3
		cmd(7, 1), // ClosePath
	}
	var feature, layer, tile pb
	feature.varintField(1, uint64(z*1_000_000+x*1000+y)) // id
	feature.packed(2, []uint32{0, 0})                    // tags: key 0 = value 0
	feature.varintField(3, 3)                            // type POLYGON
	feature.packed(4, geom)
	var value pb
	value.bytesField(1, []byte(fmt.Sprintf("%d/%d/%d", z, x, y)))
	layer.varintField(15, 2) // version
	layer.bytesField(1, []byte("tiles"))
	layer.bytesField(2, feature)
	layer.bytesField(3, []byte("zxy"))
	layer.bytesField(4, value)
	layer.varintField(5, 4096) // extent
	tile.bytesField(3, layer)

	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	if _, err := gz.Write(tile); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pb is just enough protobuf encoding for an MVT.
type pb []byte

func (b *pb) varint(v uint64) {
	for v >= 0x80 {
		*b = append(*b, byte(v)|0x80)
		v >>= 7
	}
	*b = append(*b, byte(v))
}
func (b *pb) varintField(field int, v uint64) { b.varint(uint64(field) << 3); b.varint(v) } // wire type 0
func (b *pb) bytesField(field int, v []byte) {
	b.varint(uint64(field)<<3 | 2)
	b.varint(uint64(len(v)))
	*b = append(*b, v...)
}
func (b *pb) packed(field int, vs []uint32) {
	var inner pb
	for _, v := range vs {
		inner.varint(uint64(v))
	}
	b.bytesField(field, inner)
}

// Tile is one generated object.
type Tile struct {
	Key             string // relative key, e.g. "raster/2/1/3.png"
	Body            []byte
	ContentType     string
	ContentEncoding string
}

// Set returns the sample tileset: raster PNGs under "raster/" for zooms
// 0..maxZoom, and vector tiles under "vector/" for zooms 0..1.
func Set(maxZoom int) ([]Tile, error) {
	var tiles []Tile
	for z := 0; z <= maxZoom; z++ {
		for x := 0; x < 1<<z; x++ {
			for y := 0; y < 1<<z; y++ {
				b, err := PNG(z, x, y)
				if err != nil {
					return nil, err
				}
				tiles = append(tiles, Tile{Key: fmt.Sprintf("raster/%d/%d/%d.png", z, x, y), Body: b, ContentType: "image/png"})
				if z <= 1 {
					v, err := MVT(z, x, y)
					if err != nil {
						return nil, err
					}
					tiles = append(tiles, Tile{Key: fmt.Sprintf("vector/%d/%d/%d.pbf", z, x, y), Body: v,
						ContentType: "application/vnd.mapbox-vector-tile", ContentEncoding: "gzip"})
				}
			}
		}
	}
	return tiles, nil
}
