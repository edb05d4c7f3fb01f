package synth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"testing"

	"github.com/tileproxy/tileproxy/origin"
)

// TestPyramid: indexes and paths map one to one, bodies are stable and
// differ, and all three servers answer with the same tile.
func TestPyramid(t *testing.T) {
	s := Set{N: 1400, Size: 4096}
	seen := map[string]bool{}
	for i := range s.N {
		p := Path(i)
		if j, ok := s.Index(p); !ok || j != i || seen[p] {
			t.Fatalf("tile %d: path %s gives %d %v (seen %v)", i, p, j, ok, seen[p])
		}
		seen[p] = true
		if n := s.Len(i); n < 3072 || n > 5120 {
			t.Fatalf("tile %d: %d bytes", i, n)
		}
	}
	if Path(0) != "0/0/0.pbf" || Path(1) != "1/0/0.pbf" || Path(5) != "2/0/0.pbf" {
		t.Fatalf("order: %s %s %s", Path(0), Path(1), Path(5))
	}
	if _, ok := s.Index(Path(s.N)); ok {
		t.Fatal("a tile past N")
	}
	if !bytes.Equal(s.Body(77), s.Body(77)) || bytes.Equal(s.Body(77), s.Body(78)) {
		t.Fatal("bodies are not stable or not distinct")
	}
	o := &Origin{Set: s}
	obj, err := o.Get(context.Background(), origin.Request{Key: Prefix + Path(77)})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(obj.Body)
	if !bytes.Equal(got, s.Body(77)) || obj.ETag != s.ETag(77) {
		t.Fatal("origin body differs")
	}
	if _, err := o.Get(context.Background(), origin.Request{Key: Prefix + Path(77), IfNoneMatch: s.ETag(77)}); !errors.Is(err, origin.ErrNotModified) {
		t.Fatalf("revalidation: %v", err)
	}
	if _, err := o.Get(context.Background(), origin.Request{Key: Prefix + "9/9/9.png"}); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	for _, tc := range []struct {
		h    func() *httptest.ResponseRecorder
		name string
	}{
		{func() *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			s.S3().ServeHTTP(w, httptest.NewRequest("GET", "/bucket/"+Prefix+Path(77), nil))
			return w
		}, "s3"},
		{func() *httptest.ResponseRecorder {
			w := httptest.NewRecorder()
			s.Bare("/tiles/x/").ServeHTTP(w, httptest.NewRequest("GET", "/tiles/x/"+Path(77), nil))
			return w
		}, "bare"},
	} {
		w := tc.h()
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), s.Body(77)) || w.Header().Get("Etag") != s.ETag(77) {
			t.Fatalf("%s: %d, %d bytes, etag %s", tc.name, w.Code, w.Body.Len(), w.Header().Get("Etag"))
		}
	}
}
