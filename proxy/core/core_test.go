package core

import (
	"bytes"
	"context"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/protomaps/go-pmtiles/pmtiles"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/archivetest"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/origin/origintest"
)

// TestNoHTTPTypes: the core's own files import nothing of net/http; the
// adapter in package proxy is the only place that speaks it.
func TestNoHTTPTypes(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); strings.HasPrefix(p, "net/http") {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}

func newCore(t *testing.T, withCache bool) (*Core, *origintest.Memory) {
	t.Helper()
	mem := origintest.NewMemory()
	return newCoreDeps(t, withCache, Deps{Fetcher: mem}), mem
}

// newCoreDeps is newCore over deps (a cache added when withCache).
func newCoreDeps(t *testing.T, withCache bool, deps Deps) *Core {
	t.Helper()
	cfg := config.Default()
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Tilesets = []config.Tileset{
		{Name: "a", Bucket: "tiles", Prefix: "a/", Format: "png", Missing: config.MissingNotFound, MaxZoom: 5, Bounds: []float64{-180, -85, 180, 85}},
		{Name: "e", Bucket: "tiles", Prefix: "e/", Format: "png", Missing: config.MissingEmpty, CacheControl: "private, max-age=60", MaxZoom: 5, Bounds: []float64{-180, -85, 180, 85}},
	}
	cfg.Cache.MaxObjectBytes = 64 << 10
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if withCache {
		var err error
		if deps.Cache, err = cache.New(cache.FromConfig(cfg.Cache, time.Second), cache.Deps{PoisonFreed: true}); err != nil {
			t.Fatal(err)
		}
	}
	deps.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	core, err := New(&cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return core
}

// body reads a result's body and releases it.
func body(t *testing.T, res *Result) string {
	t.Helper()
	var b bytes.Buffer
	if _, err := res.WriteBody(&b); err != nil {
		t.Fatal(err)
	}
	res.Release()
	return b.String()
}

// TestGet calls the core directly, with and without a cache: the same
// request gets the same status, headers and body either way.
func TestGet(t *testing.T) {
	lm := time.Date(2026, 11, 27, 12, 4, 5, 0, time.UTC)
	big := strings.Repeat("B", 100<<10) // over max_object_bytes: streamed
	for _, cached := range []bool{false, true} {
		c, mem := newCore(t, cached)
		mem.Put("tiles", "a/0/0/0.png", origintest.Object{Body: []byte("PNG-000"), ContentType: "image/png", LastModified: lm})
		mem.Put("tiles", "a/0/0/0.pbf", origintest.Object{Body: []byte("gz"), ContentType: "application/x-protobuf", ContentEncoding: "gzip", LastModified: lm})
		mem.Put("tiles", "a/1/0/0.html", origintest.Object{Body: []byte("<script>"), ContentType: "text/html", LastModified: lm})
		mem.Put("tiles", "a/big.bin", origintest.Object{Body: []byte(big), LastModified: lm})
		etag := origintest.ETag([]byte("PNG-000"))
		for _, tc := range []struct {
			name   string
			req    Request
			status int
			err    error
			hdr    Header
			body   string
		}{
			{"plain", Request{Tileset: "a", Path: "0/0/0.png"}, 200, nil,
				Header{ContentType: "image/png", ContentLength: "7", ETag: etag, LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, "PNG-000"},
			{"head", Request{Tileset: "a", Path: "0/0/0.png", Head: true}, 200, nil,
				Header{ContentType: "image/png", ContentLength: "7", ETag: etag, LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, ""},
			{"gzip passed through", Request{Tileset: "a", Path: "0/0/0.pbf"}, 200, nil,
				Header{ContentType: "application/x-protobuf", ContentEncoding: "gzip", ContentLength: "2", ETag: origintest.ETag([]byte("gz")), LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, "gz"},
			{"unsafe type", Request{Tileset: "a", Path: "1/0/0.html"}, 200, nil,
				Header{ContentType: "application/octet-stream", ContentLength: "8", ETag: origintest.ETag([]byte("<script>")), LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, "<script>"},
			{"not modified", Request{Tileset: "a", Path: "0/0/0.png", Cond: Conditions{IfNoneMatch: etag}}, 304, nil,
				Header{ETag: etag, CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, ""},
			{"range", Request{Tileset: "a", Path: "0/0/0.png", Cond: Conditions{Range: "bytes=1-3"}}, 206, nil,
				Header{ContentType: "image/png", ContentLength: "3", ContentRange: "bytes 1-3/7", ETag: etag, LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, "NG-"},
			{"missing", Request{Tileset: "a", Path: "9/9/9.png"}, 0, ErrNotFound, Header{}, ""},
			{"missing, empty", Request{Tileset: "e", Path: "9/9/9.png"}, 204, nil, Header{CacheControl: "private, max-age=60"}, ""},
			{"unknown tileset", Request{Tileset: "zz", Path: "0/0/0.png"}, 0, ErrUnknownTileset, Header{}, ""},
			{"no tile", Request{Tileset: "a", Path: "0/"}, 0, ErrBadPath, Header{}, ""},
			{"key too long", Request{Tileset: "a", Path: strings.Repeat("k", MaxKeyBytes)}, 0, ErrBadPath, Header{}, ""},
			{"large, streamed", Request{Tileset: "a", Path: "big.bin"}, 200, nil,
				Header{ContentType: "application/octet-stream", ContentLength: strconv.Itoa(len(big)), ETag: origintest.ETag([]byte(big)), LastModified: "Fri, 27 Nov 2026 12:04:05 GMT", CacheControl: config.DefaultCacheControl, AcceptRanges: "bytes"}, big},
		} {
			t.Run(tc.name+map[bool]string{false: ", no cache", true: ", cached"}[cached], func(t *testing.T) {
				for i := range 2 { // the second time from the cache, when there is one
					res, err := c.Get(t.Context(), tc.req)
					if !errors.Is(err, tc.err) {
						t.Fatalf("#%d: error %v, want %v", i, err, tc.err)
					}
					if err != nil {
						res.Release()
						continue
					}
					if got := body(t, &res); res.Status != tc.status || res.Header != tc.hdr || got != tc.body {
						t.Fatalf("#%d: %d %+v %d bytes;\nwant %d %+v %d bytes", i, res.Status, res.Header, len(got), tc.status, tc.hdr, len(tc.body))
					}
				}
			})
		}
	}
}

// TestGetOriginErrors: origin failures come back as origin's sentinels,
// and ErrSaturated when every s3.max_in_flight slot is taken.
func TestGetOriginErrors(t *testing.T) {
	fail := origin.FetcherFunc(func(context.Context, origin.Request) (*origin.Object, error) {
		return nil, &origin.Error{Kind: origin.ErrDenied, Op: "GetObject", Code: "AccessDenied"}
	})
	c := newCoreDeps(t, true, Deps{Fetcher: fail})
	if _, err := c.Get(t.Context(), Request{Tileset: "a", Path: "0/0/0.png"}); !errors.Is(err, origin.ErrDenied) {
		t.Fatalf("denied origin: %v", err)
	}
	// One slot, held by a fetch that waits: the next request is refused
	// at once.
	held, done := make(chan struct{}), make(chan struct{})
	wait := origin.FetcherFunc(func(context.Context, origin.Request) (*origin.Object, error) {
		close(held)
		<-done
		return nil, origin.ErrNotFound
	})
	c = newCoreDeps(t, false, Deps{Fetcher: wait, Slots: origin.NewSlots(1)})
	go c.Get(context.Background(), Request{Tileset: "a", Path: "0/0/0.png"})
	<-held
	if _, err := c.Get(t.Context(), Request{Tileset: "a", Path: "1/0/0.png"}); !errors.Is(err, origin.ErrSaturated) {
		t.Fatalf("saturated: %v", err)
	}
	close(done)
}

// TestCacheSettingsHaveOneOwner: the core takes the cache settings from
// the cache, never from the configuration it was built with, so a reload
// whose file changes them (and is told they need a restart) cannot apply
// them to the core alone: max_object_bytes decides what counts against
// limits.streams_per_principal, and ttl and negative_ttl when an archive's
// head is read again.
func TestCacheSettingsHaveOneOwner(t *testing.T) {
	running := config.Default()
	running.Cache.MaxObjectBytes = 4 << 10
	running.Cache.TTL = config.Duration(time.Minute)
	cfg := config.Default() // the reloaded file: larger objects, a longer TTL
	cfg.Auth.HMACSecret = "0123456789abcdef0123456789abcdef"
	cfg.Cache.MaxObjectBytes = 32 << 20
	cfg.Cache.TTL = config.Duration(time.Hour)
	cfg.Limits.StreamsPerPrincipal = 1
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: "tiles", Prefix: "a/"}, {Name: "m", Bucket: "maps", Archive: "world.pmtiles"}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	mem := origintest.NewMemory()
	mem.Put("tiles", "a/big.png", origintest.Object{Body: bytes.Repeat([]byte("x"), 16<<10), ContentType: "image/png"})
	mem.Put("maps", "world.pmtiles", origintest.Object{Body: archivetest.Build(archivetest.Pyramid(2, "v1"), archivetest.Options{TileType: pmtiles.Png})})
	clk := testenv.NewClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	for _, withCache := range []bool{true, false} {
		deps := Deps{Fetcher: mem, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)}
		if withCache {
			c, err := cache.New(cache.FromConfig(running.Cache, time.Second), cache.Deps{Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			deps.Cache = c
		} else {
			deps.CacheConfig = cache.FromConfig(running.Cache, time.Second)
		}
		c, err := New(&cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		first, err := c.Get(t.Context(), Request{Tileset: "a", Path: "big.png", Principal: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(t.Context(), Request{Tileset: "a", Path: "big.png", Principal: "p"}); !errors.Is(err, ErrLimited) {
			t.Errorf("cache %v: a second 16 KiB stream with max_object_bytes 4 KiB in force: %v, want ErrLimited", withCache, err)
		}
		first.Release()

		before := len(mem.Requests())
		res, err := c.Get(t.Context(), Request{Tileset: "m", Path: "1/0/0.png"})
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		clk.Add(2 * time.Minute) // past the running TTL, within the file's
		res, err = c.Get(t.Context(), Request{Tileset: "m", Path: "1/0/0.png"})
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
		heads := 0
		for _, r := range mem.Requests()[before:] {
			if r.Key == "world.pmtiles" && strings.HasPrefix(r.Range, "bytes=0-") {
				heads++
			}
		}
		if heads != 2 {
			t.Errorf("cache %v: the archive head was read %d times in 2 minutes, want 2 (ttl 1m in force)", withCache, heads)
		}
	}
}
