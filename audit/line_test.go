package audit

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzLine: whatever the tileset, path, issuer and subject hold, a line
// is one valid JSON object ending in its only newline, holds no NUL (the
// writer's end-of-data mark), and reads back as written.
func FuzzLine(f *testing.F) {
	for _, s := range []string{"city", "14/8190/5447.png", "a\"b\\c\n\r\t\x00\x1f", "\u2028\u2029", "\xff\xfe", "ünïcödé", "eyJhbGciOi.x.y"} {
		f.Add(s, s, s, s)
	}
	f.Fuzz(func(t *testing.T, tileset, path, iss, sub string) {
		l := &Line{Time: time.Unix(1764842400, 123e6), Seq: 1, Principal: "p", Issuer: iss, Subject: sub,
			Tileset: tileset, Path: path, Status: 200, Bytes: 7, Cache: "HIT", Reason: tileset}
		b := appendLine(nil, l, lineHead("r1", "abc"), &timeText{}, true)
		if bytes.IndexByte(b, 0) >= 0 {
			t.Fatalf("a NUL in %q", b)
		}
		if bytes.IndexByte(b, '\n') != len(b)-1 {
			t.Fatalf("not one line: %q", b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		for k, want := range map[string]string{"tileset": tileset, "path": path, "iss": iss, "sub": sub} {
			got, _ := m[k].(string)
			if want == "" && k != "tileset" && k != "path" {
				continue // empty claims are left out
			}
			if utf8.ValidString(want) && got != want {
				t.Fatalf("%s: %q read back as %q", k, want, got)
			}
		}
	})
}

func TestAppendTime(t *testing.T) {
	for _, tm := range []time.Time{time.Unix(0, 0), time.Date(2026, 12, 4, 9, 5, 7, 89e6, time.UTC), time.Date(999, 1, 2, 23, 59, 59, 999999999, time.FixedZone("x", 3600))} {
		want := tm.UTC().Format("2006-01-02T15:04:05.000Z")
		if got := string(appendTime(nil, tm)); got != want {
			t.Errorf("appendTime(%v) = %s, want %s", tm, got, want)
		}
	}
}
