package config

import "testing"

// FuzzParse: no YAML input, with ${VAR} expansion, panics Parse or
// Validate; a valid result keeps the invariants the server relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("tilesets: [{name: a, bucket: b}]\nauth: {hmac_secret: ${X}}"))
	f.Add([]byte("cache: {max_bytes: 99999999999999999999TiB}"))
	f.Add([]byte("a: &a [*a, *a, *a]\nb: *a"))
	f.Add([]byte("listen: ${A:-${B}}"))
	f.Add([]byte("{{{{"))
	f.Add([]byte("tilesets:\n  - name: x\n    bounds: [1e400, -1e400, 0, 0]"))
	env := func(k string) (string, bool) {
		if k == "X" {
			return "0123456789abcdef0123456789abcdef", true
		}
		return "", false
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, env)
		if err != nil {
			return
		}
		if cfg.Validate() != nil {
			return
		}
		if len(cfg.Tilesets) == 0 || cfg.Cache.MaxObjectBytes > cfg.Cache.MaxBytes {
			t.Fatalf("Validate accepted broken invariants: %+v", cfg)
		}
		for _, ts := range cfg.Tilesets {
			if ts.Name == "" || ts.Bucket == "" {
				t.Fatalf("tileset without name or bucket: %+v", ts)
			}
		}
	})
}
