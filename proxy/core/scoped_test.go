package core

import "testing"

func TestParseTilePath(t *testing.T) {
	for _, tc := range []struct {
		path       string
		z          uint8
		x, y       uint32
		vector, ok bool
	}{
		{"3/4/2.png", 3, 4, 2, false, true},
		{"14/8190/5447.pbf", 14, 8190, 5447, true, true},
		{"0/0/0.MVT", 0, 0, 0, true, true},
		{"0/0/0.Pbf", 0, 0, 0, true, true},
		{"0/0/0.pbff", 0, 0, 0, false, true},
		{"0/0/0.pb", 0, 0, 0, false, true},
		{"0/0/0.mvp", 0, 0, 0, false, true},
		{"30/1073741823/0.png", 30, 1<<30 - 1, 0, false, true},
		{"31/0/0.png", 0, 0, 0, false, false},
		{"3/8/0.png", 0, 0, 0, false, false},
		{"03/1/1.png", 0, 0, 0, false, false},
		{"3/4/2", 0, 0, 0, false, false},
		{"3/4/2.", 0, 0, 0, false, false},
		{"3/4/2.png/x", 0, 0, 0, false, false},
		{"3/4/2.tar.gz", 0, 0, 0, false, false},
		{"a/b/c.png", 0, 0, 0, false, false},
		{"3//2.png", 0, 0, 0, false, false},
		{"99999999999999999999/0/0.png", 0, 0, 0, false, false},
		{"metadata.json", 0, 0, 0, false, false},
	} {
		z, x, y, vector, ok := parseTilePath(tc.path)
		if ok != tc.ok || (ok && (z != tc.z || x != tc.x || y != tc.y || vector != tc.vector)) {
			t.Errorf("%q: %d/%d/%d vector %v ok %v", tc.path, z, x, y, vector, ok)
		}
	}
}
