// Package synth makes a pyramid of synthetic tiles computed from their
// index, never stored, for benchmarks at a million tiles: an in-process
// origin (origin.Fetcher) and an S3 endpoint (for tileproxy serve) that
// answer from the same function, and a bare handler holding the same
// tiles in a map, the floor tileproxy is measured against.
//
// Tile i is the i-th of z0, z1, ... in row order; its key is
// Prefix+"z/x/y.pbf" and its body Size bytes on average (3/4 to 5/4 of it,
// varying by tile), starting with its own name.
package synth

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/origin"
)

// Prefix is where the tiles are in the bucket.
const Prefix = "t/"

// ContentType is every tile's type.
const ContentType = "application/x-protobuf"

// Modified is every tile's Last-Modified.
var Modified = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Set is the first N tiles, of Size bytes on average.
type Set struct {
	N, Size int
}

// ZXY is tile i's coordinates.
func ZXY(i int) (z, x, y int) {
	for n := 1; ; z, n = z+1, n*4 {
		if i < n {
			return z, i % (1 << z), i / (1 << z)
		}
		i -= n
	}
}

// Path is tile i's z/x/y.pbf.
func Path(i int) string {
	z, x, y := ZXY(i)
	return fmt.Sprintf("%d/%d/%d.pbf", z, x, y)
}

// Index is the tile at z/x/y.pbf, if it is one of s's.
func (s Set) Index(path string) (int, bool) {
	p, ok := strings.CutSuffix(path, ".pbf")
	parts := strings.Split(p, "/")
	if !ok || len(parts) != 3 {
		return 0, false
	}
	var v [3]int
	for j, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 || n >= 1<<30 {
			return 0, false
		}
		v[j] = n
	}
	z, x, y := v[0], v[1], v[2]
	if z > 14 || x >= 1<<z || y >= 1<<z {
		return 0, false
	}
	i := ((1<<(2*z))-1)/3 + y<<z + x
	return i, i < s.N
}

// Len is tile i's body length.
func (s Set) Len(i int) int {
	return s.Size*3/4 + int(uint64(i)*0x9E3779B97F4A7C15>>40)%(s.Size/2+1)
}

// Body is tile i's body.
func (s Set) Body(i int) []byte {
	b := make([]byte, s.Len(i))
	r := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	for j := 0; j < len(b); j += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && j+k < len(b); k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	copy(b, Path(i))
	return b
}

// ETag is tile i's ETag.
func (s Set) ETag(i int) string { return fmt.Sprintf(`"synth-%d-%d"`, s.Size, i) }

// Origin serves s in process, as origin.Fetcher: a miss then costs
// tileproxy's own work and a body's making, not a network round trip.
type Origin struct {
	Set
	// Calls counts requests.
	Calls atomic.Int64
}

// Get implements origin.Fetcher for keys Prefix+z/x/y.pbf in any bucket.
func (o *Origin) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	o.Calls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	i, ok := o.Index(strings.TrimPrefix(req.Key, Prefix))
	if !ok || !strings.HasPrefix(req.Key, Prefix) {
		return nil, &origin.Error{Kind: origin.ErrNotFound, Op: "GetObject", Code: "NoSuchKey"}
	}
	etag := o.ETag(i)
	if req.IfNoneMatch == etag {
		return nil, &origin.Error{Kind: origin.ErrNotModified, Op: "GetObject"}
	}
	obj := &origin.Object{Size: int64(o.Len(i)), TotalSize: int64(o.Len(i)), ContentType: ContentType, ETag: etag, LastModified: Modified}
	if !req.HeadOnly {
		obj.Body = io.NopCloser(strings.NewReader(string(o.Body(i))))
	}
	return obj, nil
}

// S3 serves s as S3 GetObject and HeadObject, path-style, in any bucket,
// ignoring signatures: the origin for tileproxy serve at sizes MinIO
// would take an hour to load.
func (s Set) S3() http.Handler {
	modified := Modified.Format(http.TimeFormat)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		i, ok := s.Index(strings.TrimPrefix(key, Prefix))
		if !ok || !strings.HasPrefix(key, Prefix) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>no such key</Message><Key>%s</Key></Error>`, key)
			return
		}
		etag := s.ETag(i)
		h := w.Header()
		h.Set("ETag", etag)
		h.Set("Last-Modified", modified)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", ContentType)
		h.Set("Content-Length", strconv.Itoa(s.Len(i)))
		if r.Method == http.MethodGet {
			w.Write(s.Body(i))
		}
	})
}

// Bare is the floor: a plain net/http handler holding s's tiles in a
// map by URL path (base+"z/x/y.pbf"), answering with the headers
// tileproxy sends and ignoring the token.
func (s Set) Bare(base string) http.Handler {
	type tile struct {
		body []byte
		etag string
	}
	tiles := make(map[string]tile, s.N)
	for i := range s.N {
		tiles[base+Path(i)] = tile{s.Body(i), s.ETag(i)}
	}
	modified := []string{Modified.Format(http.TimeFormat)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, ok := tiles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h["Content-Type"] = []string{ContentType}
		h["Content-Length"] = []string{strconv.Itoa(len(t.body))}
		h["Cache-Control"] = []string{"private, max-age=3600"}
		h["Etag"] = []string{t.etag}
		h["Last-Modified"] = modified
		h["Accept-Ranges"] = []string{"bytes"}
		h["X-Cache"] = []string{"HIT"}
		h["X-Content-Type-Options"] = []string{"nosniff"}
		w.Write(t.body)
	})
}
