package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/origin"
)

// Source is where a tileset's objects come from: objects under a prefix
// of a bucket (prefixSource), or one PMTiles archive (archiveSource).
// The core asks it for a cache key, loads through it on a miss, and
// streams through it what the cache does not keep.
type Source interface {
	// Key maps a checked object path to the cache key of its object,
	// or ErrBadPath / ErrNotFound when the path cannot name one.
	Key(ctx context.Context, path string) (string, error)
	// Load fetches the object of a cache key whole, for the cache (a
	// cache.LoadFunc): a cache.NewLargeEntry when it is over
	// max_object_bytes, cache.ErrNotFound when it does not exist.
	Load(ctx context.Context, key string, prev *cache.Entry) (*cache.Entry, error)
	// Open fetches it as a stream, passing the request's conditions to
	// the origin: for objects too large to cache, or with no cache.
	Open(ctx context.Context, key string, req Request) (*origin.Object, error)
	// KeySuffixed is Key with sep and tail appended, in one allocation
	// (a layer-filtered variant's key, on every filtered hit).
	KeySuffixed(ctx context.Context, path, sep, tail string) (string, error)
}

// tileJSONSource is a Source that builds its own TileJSON (an archive,
// from its header and metadata); others are described by the config.
type tileJSONSource interface {
	TileJSON(ctx context.Context, publicURL string) ([]byte, error)
}

// MaxKeyBytes bounds an object key: S3 allows 1024 bytes.
const MaxKeyBytes = 1024

// prefixSource serves the objects under a tileset's prefix: the object
// path "3/4/2.png" is the S3 key prefix+"3/4/2.png", cached under
// KeyPrefix(ts)+"3/4/2.png".
type prefixSource struct {
	ts        *config.Tileset
	keyPrefix string // KeyPrefix(ts)
	deps      sourceDeps
}

var _ Source = (*prefixSource)(nil)

func newPrefixSource(ts *config.Tileset, deps sourceDeps) *prefixSource {
	return &prefixSource{ts: ts, keyPrefix: KeyPrefix(ts), deps: deps}
}

func (s *prefixSource) Key(ctx context.Context, path string) (string, error) {
	return s.KeySuffixed(ctx, path, "", "")
}

// KeySuffixed is Key with sep and tail appended, in one allocation.
func (s *prefixSource) KeySuffixed(_ context.Context, path, sep, tail string) (string, error) {
	if path == "" || strings.HasSuffix(path, "/") {
		return "", fmt.Errorf("%w: no tile in path", ErrBadPath)
	}
	if len(s.ts.Prefix)+len(path) > MaxKeyBytes {
		return "", fmt.Errorf("%w: key longer than %d bytes", ErrBadPath, MaxKeyBytes)
	}
	return s.keyPrefix + path + sep + tail, nil
}

// objectKey is the S3 key of a cache key.
func (s *prefixSource) objectKey(cacheKey string) string {
	return s.ts.Prefix + cacheKey[len(s.keyPrefix):]
}

func (s *prefixSource) Load(ctx context.Context, cacheKey string, prev *cache.Entry) (*cache.Entry, error) {
	key := s.objectKey(cacheKey)
	req := origin.Request{Tileset: s.ts.Name, Bucket: s.ts.Bucket, Key: key}
	if prev != nil {
		req.IfNoneMatch = prev.Meta().ETag
	}
	obj, err := s.deps.fetch.Get(ctx, req)
	switch {
	case errors.Is(err, origin.ErrNotModified):
		return nil, fmt.Errorf("%w: %w", cache.ErrNotModified, err)
	case errors.Is(err, origin.ErrNotFound):
		return nil, fmt.Errorf("%w: %w", cache.ErrNotFound, err)
	case err != nil:
		return nil, err
	}
	defer obj.Body.Close()
	limit := s.deps.cache.MaxObjectBytes
	if obj.Size > limit {
		return cache.NewLargeEntry(), nil
	}
	var body []byte
	if obj.Size >= 0 {
		body = make([]byte, obj.Size)
		_, err = io.ReadFull(obj.Body, body)
	} else {
		body, err = io.ReadAll(io.LimitReader(obj.Body, limit+1))
		if int64(len(body)) > limit {
			return cache.NewLargeEntry(), nil
		}
	}
	if err != nil {
		return nil, &origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject body", Err: err}
	}
	return cache.NewEntry(body, renderMeta(contentType(obj.ContentType, key), obj.ContentEncoding, obj.ETag, obj.LastModified, int64(len(body)))), nil
}

func (s *prefixSource) Open(ctx context.Context, cacheKey string, r Request) (*origin.Object, error) {
	req := origin.Request{
		Tileset:     s.ts.Name,
		Bucket:      s.ts.Bucket,
		Key:         s.objectKey(cacheKey),
		HeadOnly:    r.Head,
		IfNoneMatch: r.Cond.IfNoneMatch,
		Stream:      true,
	}
	if req.IfNoneMatch == "" {
		if t, ok := parseHTTPTime(r.Cond.IfModifiedSince); ok {
			req.IfModifiedSince = t
		}
	}
	if !req.HeadOnly {
		req.Range = r.Cond.Range
	}
	return s.deps.fetch.Get(ctx, req)
}

// renderMeta renders an object's header values once, when it is loaded,
// so that a hit formats nothing (the cache keeps the text as it is).
func renderMeta(contentType, contentEncoding, etag string, modified time.Time, size int64) cache.Meta {
	m := cache.Meta{ContentType: contentType, ContentEncoding: contentEncoding, ETag: etag, ContentLength: strconv.FormatInt(size, 10)}
	if !modified.IsZero() {
		m.Modified = modified.UTC()
		m.LastModified = m.Modified.Format(timeFormat)
	}
	return m
}
