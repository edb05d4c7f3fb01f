package tilegen

import (
	"bytes"
	"compress/gzip"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestPNGIsARealLabelledTile(t *testing.T) {
	b, err := PNG(2, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != TileSize || img.Bounds().Dy() != TileSize {
		t.Fatalf("size %v", img.Bounds())
	}
	// The label is dark text on a light ground: some pixels must be dark.
	dark := 0
	for y := 0; y < TileSize; y++ {
		for x := 0; x < TileSize; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r+g+b < 3*0x4000 {
				dark++
			}
		}
	}
	if dark < 500 {
		t.Errorf("only %d dark pixels: label missing?", dark)
	}
	other, _ := PNG(2, 1, 2)
	if bytes.Equal(b, other) {
		t.Error("two tiles are identical")
	}
}

func TestMVTIsGzip(t *testing.T) {
	b, err := MVT(1, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Field 3 (layers), wire type 2, and the layer name "tiles".
	if raw[0] != 3<<3|2 || !bytes.Contains(raw, []byte("tiles")) || !bytes.Contains(raw, []byte("1/0/1")) {
		t.Errorf("not an MVT: % x", raw)
	}
}

// TestTestdataUpToDate keeps the committed testdata equal to what the
// generator draws, so the demo and the MinIO tests serve the same tiles.
func TestTestdataUpToDate(t *testing.T) {
	tiles, err := Set(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, tile := range tiles {
		got, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tiles", filepath.FromSlash(tile.Key)))
		if err != nil {
			t.Fatalf("%v (run go generate ./internal/tilegen)", err)
		}
		if !bytes.Equal(got, tile.Body) {
			t.Fatalf("testdata/tiles/%s is stale (run go generate ./internal/tilegen)", tile.Key)
		}
	}
}
