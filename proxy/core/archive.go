package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/archive"
	"github.com/tileproxy/tileproxy/origin"
)

// ErrSourceChanged: the source's object was replaced under a request (an
// archive's If-Match failed); Get looks it up once more from the start.
var ErrSourceChanged = errors.New("source changed")

// archiveSource serves a tileset from one PMTiles archive, read with
// ranged GetObject calls through the guarded origin and the tileset's
// credentials (whose session policy names the archive alone).
//
// What it knows of the archive (ETag, header, root directory) is an
// archiveState, read from the first HeadBytes and checked again after
// cache.ttl with If-None-Match. Tile cache keys carry the ETag
// (KeyPrefix+etag+"/t123"), and every read after the first carries
// If-Match: a replaced archive answers 412, its cached tiles are dropped,
// and it is read afresh, so no answer mixes old and new bytes. Leaf
// directories are the archive's index, not tiles: each version keeps its
// own, decoded, in a leafDirs of its own (not the tile cache).
type archiveSource struct {
	ts        *config.Tileset
	keyPrefix string // KeyPrefix(ts)
	deps      sourceDeps
	ttl       time.Duration
	flight    singleflight.Group

	// state is the archive version known, read on every request:
	// atomic, so hits share no lock. Replaced whole, never changed.
	state atomic.Pointer[archiveState]
	// failed remembers, for retryAfter, why the archive could not be read
	// when no version is known (missing, broken, S3 down), so a flood of
	// tile requests costs one read and one log line, not one per request.
	failed atomic.Pointer[archiveFailure]
}

// archiveFailure is a failed read, answered until it expires.
type archiveFailure struct {
	err   error
	until time.Time
}

// retryAfter is how long a failed read is answered from memory: the
// negative TTL, as for a missing tile, else a few seconds.
func (s *archiveSource) retryAfter() time.Duration {
	if d := s.deps.cache.NegativeTTL; d > 0 {
		return d
	}
	return 5 * time.Second
}

// remembered reports whether a failed read is worth remembering: not the
// caller going away, and not a moment without origin slots.
func remembered(err error) bool {
	return !errors.Is(err, context.Canceled) && !errors.Is(err, origin.ErrSaturated) && !errors.Is(err, ErrSourceChanged)
}

// archiveState is one version of the archive, immutable once made.
type archiveState struct {
	etag         string
	size         int64
	lastModified time.Time
	header       archive.HeaderV3
	format       archive.TileFormat
	root         []archive.EntryV3
	prefix       string // cache keys of this version's tiles start so
	checked      time.Time
	dirs         *leafDirs // shared by every renewal of the version

	tileJSONOnce sync.Once
	tileJSON     []byte
	tileJSONErr  error
}

var _ Source = (*archiveSource)(nil)

func newArchiveSource(ts *config.Tileset, deps sourceDeps) *archiveSource {
	ttl := deps.cache.TTL
	if ttl <= 0 {
		ttl = time.Minute
	}
	return &archiveSource{ts: ts, keyPrefix: KeyPrefix(ts), deps: deps, ttl: ttl}
}

// current is the archive's state, read on first use and checked again
// once it is older than the cache TTL; concurrent callers share one read.
func (s *archiveSource) current(ctx context.Context) (*archiveState, error) {
	now := s.deps.now()
	st := s.state.Load()
	if st != nil && now.Sub(st.checked) < s.ttl {
		return st, nil
	}
	if f := s.failed.Load(); st == nil && f != nil && now.Before(f.until) {
		return nil, f.err
	}
	v, err, _ := s.flight.Do("state", func() (any, error) {
		st, err := s.refresh(context.WithoutCancel(ctx), st)
		if err != nil && remembered(err) {
			s.failed.Store(&archiveFailure{err: err, until: s.deps.now().Add(s.retryAfter())})
		} else if err == nil {
			s.failed.Store(nil)
		}
		return st, err
	})
	if err != nil {
		if st != nil && errors.Is(err, origin.ErrUnavailable) {
			return st, nil // S3 down: keep serving the version we know
		}
		return nil, err
	}
	return v.(*archiveState), nil
}

// refresh reads the head of the archive (If-None-Match the version
// known), and installs the new state, dropping the cached tiles and
// directories of a version that is gone.
func (s *archiveSource) refresh(ctx context.Context, old *archiveState) (*archiveState, error) {
	ctx, cancel := context.WithTimeout(ctx, s.deps.cache.LoadTimeout)
	defer cancel()
	req := origin.Request{Tileset: s.ts.Name, Bucket: s.ts.Bucket, Key: s.ts.Archive, Range: "bytes=0-" + strconv.Itoa(archive.HeadBytes-1)}
	if old != nil {
		req.IfNoneMatch = old.etag
	}
	obj, err := s.deps.fetch.Get(ctx, req)
	switch {
	case errors.Is(err, origin.ErrNotModified) && old != nil:
		st := old.renewed(s.deps.now())
		s.install(st, nil)
		return st, nil
	case errors.Is(err, origin.ErrNotFound):
		s.install(nil, old)
		return nil, fmt.Errorf("archive %s: %w", s.ts.Archive, ErrNotFound)
	case errors.Is(err, origin.ErrRangeNotSatisfiable):
		return nil, s.broken(fmt.Errorf("%w: empty object", archive.ErrBroken))
	case err != nil:
		return nil, err
	}
	head, err := readAll(obj, archive.HeadBytes)
	if err != nil {
		return nil, err
	}
	st := &archiveState{etag: obj.ETag, size: obj.TotalSize, lastModified: obj.LastModified, checked: s.deps.now(), dirs: newLeafDirs()}
	if st.size < 0 {
		st.size = int64(len(head))
	}
	st.prefix = s.keyPrefix + st.etag + "/"
	if st.header, err = archive.Header(head, st.size); err != nil {
		return nil, s.broken(err)
	}
	if st.format, err = archive.Format(st.header); err != nil {
		return nil, s.broken(err)
	}
	h := st.header
	var rootBytes []byte
	if h.RootOffset+h.RootLength <= uint64(len(head)) {
		rootBytes = head[h.RootOffset : h.RootOffset+h.RootLength]
	} else if rootBytes, err = s.read(ctx, st, h.RootOffset, h.RootLength); err != nil {
		return nil, err
	}
	if st.root, err = archive.Directory(rootBytes, h); err != nil {
		return nil, s.broken(err)
	}
	s.install(st, old)
	return st, nil
}

// renewed is st checked again at now (a 304): same version.
func (st *archiveState) renewed(now time.Time) *archiveState {
	return &archiveState{etag: st.etag, size: st.size, lastModified: st.lastModified, header: st.header,
		format: st.format, root: st.root, prefix: st.prefix, checked: now, dirs: st.dirs}
}

// install makes st current and drops the tiles the cache holds of old,
// when old is another version.
func (s *archiveSource) install(st, old *archiveState) {
	s.state.Store(st)
	if old != nil && (st == nil || st.prefix != old.prefix) && s.deps.drop != nil {
		if n := s.deps.drop(old.prefix); n > 0 {
			s.deps.log.Info("PMTiles archive replaced; dropped its cached tiles", "tileset", s.ts.Name, "entries", n)
		}
	}
}

// changed forgets st after a 412: the archive was replaced.
func (s *archiveSource) changed(st *archiveState) {
	if s.state.CompareAndSwap(st, nil) {
		s.install(nil, st)
	}
}

// broken logs a broken archive once per read and returns a 502.
func (s *archiveSource) broken(err error) error {
	s.deps.log.Warn("PMTiles archive unreadable", "tileset", s.ts.Name, "archive", s.ts.Archive, "err", err)
	return &origin.Error{Kind: origin.ErrUnavailable, Op: "PMTiles", Err: err}
}

// read fetches n bytes at off of st's version (If-Match).
func (s *archiveSource) read(ctx context.Context, st *archiveState, off, n uint64) ([]byte, error) {
	req := origin.Request{Tileset: s.ts.Name, Bucket: s.ts.Bucket, Key: s.ts.Archive, IfMatch: st.etag,
		Range: fmt.Sprintf("bytes=%d-%d", off, off+n-1)}
	obj, err := s.deps.fetch.Get(ctx, req)
	if errors.Is(err, origin.ErrChanged) {
		s.changed(st)
		return nil, fmt.Errorf("%w: %w", ErrSourceChanged, err)
	}
	if err != nil {
		return nil, err
	}
	b, err := readAll(obj, int64(n))
	if err == nil && uint64(len(b)) != n {
		err = s.broken(archive.ErrBroken)
	}
	return b, err
}

// readAll reads an object's body, at most limit bytes, and closes it.
func readAll(obj *origin.Object, limit int64) ([]byte, error) {
	defer obj.Body.Close()
	b, err := io.ReadAll(io.LimitReader(obj.Body, limit))
	if err != nil {
		return nil, &origin.Error{Kind: origin.ErrUnavailable, Op: "GetObject body", Err: err}
	}
	return b, nil
}

// Key parses "{z}/{x}/{y}.{ext}" against the archive: the extension must
// be the archive's tile type's, and z/x/y a tile; the key names the tile
// in this version of the archive.
func (s *archiveSource) Key(ctx context.Context, path string) (string, error) {
	return s.KeySuffixed(ctx, path, "", "")
}

// KeySuffixed is Key with sep and tail appended, in one allocation.
func (s *archiveSource) KeySuffixed(ctx context.Context, path, sep, tail string) (string, error) {
	rest, ext, ok := strings.Cut(path, ".")
	if !ok {
		return "", ErrNotFound
	}
	// z, x and y without allocating (this runs on every hit).
	var zxy [3]uint64
	for i := range zxy {
		p := rest
		if i < 2 {
			if p, rest, ok = strings.Cut(rest, "/"); !ok {
				return "", ErrNotFound
			}
		}
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil || (len(p) > 1 && p[0] == '0') {
			return "", ErrNotFound
		}
		zxy[i] = n
	}
	if zxy[0] > 31 || zxy[1] >= 1<<zxy[0] || zxy[2] >= 1<<zxy[0] {
		return "", ErrNotFound
	}
	st, err := s.current(ctx)
	if err != nil {
		return "", err
	}
	if !containsFold(st.format.Extensions, ext) {
		return "", ErrNotFound
	}
	var id [20]byte
	return st.prefix + "t" + string(strconv.AppendUint(id[:0], archive.ZxyToID(uint8(zxy[0]), uint32(zxy[1]), uint32(zxy[2])), 10)) + sep + tail, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// version is the state a key was made for; ErrSourceChanged when it is
// not current any more.
func (s *archiveSource) version(key string) (*archiveState, uint64, error) {
	st := s.state.Load()
	if st == nil || !strings.HasPrefix(key, st.prefix+"t") {
		return nil, 0, ErrSourceChanged
	}
	id, err := strconv.ParseUint(key[len(st.prefix)+1:], 10, 64)
	if err != nil {
		return nil, 0, ErrNotFound
	}
	return st, id, nil
}

// entry finds tile id's directory entry: the root, then leaf directories
// (each kept in the cache), at most archive.MaxDepth deep.
func (s *archiveSource) entry(ctx context.Context, st *archiveState, id uint64) (archive.EntryV3, bool, error) {
	dir := st.root
	for range archive.MaxDepth {
		e, leaf, ok := archive.Find(dir, id)
		if !ok || !leaf {
			return e, ok, nil
		}
		var err error
		if dir, err = s.leaf(ctx, st, e); err != nil {
			return e, false, err
		}
	}
	return archive.EntryV3{}, false, s.broken(fmt.Errorf("%w: directories nested deeper than %d", archive.ErrBroken, archive.MaxDepth))
}

// leaf returns the leaf directory e points at, decoded: from the
// version's leafDirs, or read once however many requests want it. A leaf
// longer than archive.MaxDirectoryBytes is refused from the entry's
// length, before any read; a broken leaf is remembered for retryAfter.
//
// No cache load waits here on another: a tile's load reads its leaves
// through leafDirs' own flight (a different key space from the tile
// cache's), and a leaf's read only fetches, so it cannot coalesce with,
// or wait for, the load that asked for it.
func (s *archiveSource) leaf(ctx context.Context, st *archiveState, e archive.EntryV3) ([]archive.EntryV3, error) {
	off, n := st.header.LeafDirectoryOffset+e.Offset, uint64(e.Length)
	if d, ok := st.dirs.get(off, s.deps.now()); ok {
		return d.entries, d.err
	}
	v, err, _ := st.dirs.flight.Do(strconv.FormatUint(off, 10), func() (any, error) {
		if d, ok := st.dirs.get(off, s.deps.now()); ok {
			return d.entries, d.err
		}
		var raw []byte
		var err error
		if n == 0 || n > archive.MaxDirectoryBytes {
			err = fmt.Errorf("%w: leaf directory of %d bytes (at most %d)", archive.ErrBroken, n, archive.MaxDirectoryBytes)
		} else {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.deps.cache.LoadTimeout)
			raw, err = s.read(ctx, st, off, n)
			cancel()
		}
		var entries []archive.EntryV3
		if err == nil {
			entries, err = archive.Directory(raw, st.header)
		}
		if oe := (*origin.Error)(nil); errors.Is(err, archive.ErrBroken) && !errors.As(err, &oe) {
			err = s.broken(err) // logged once; read's own are logged already
		}
		switch {
		case err == nil:
			st.dirs.put(off, leafDir{entries: entries})
		case errors.Is(err, archive.ErrBroken):
			st.dirs.put(off, leafDir{err: err, until: s.deps.now().Add(s.retryAfter())})
		}
		return entries, err
	})
	entries, _ := v.([]archive.EntryV3)
	return entries, err
}

// Load reads one tile of the version its key names. A tile of a version
// never changes, so revalidation needs no request.
func (s *archiveSource) Load(ctx context.Context, key string, prev *cache.Entry) (*cache.Entry, error) {
	st, id, err := s.version(key)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		return nil, cache.ErrNotModified
	}
	e, ok, err := s.entry(ctx, st, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, cache.ErrNotFound
	}
	if int64(e.Length) > s.deps.cache.MaxObjectBytes {
		return cache.NewLargeEntry(), nil
	}
	body, err := s.read(ctx, st, st.header.TileDataOffset+e.Offset, uint64(e.Length))
	if err != nil {
		return nil, err
	}
	return cache.NewEntry(body, renderMeta(st.format.ContentType, st.format.Encoding, st.tileETag(id), st.lastModified, int64(len(body)))), nil
}

// tileETag is a tile's ETag: the archive version's and the tile id, so it
// changes when the archive does.
func (st *archiveState) tileETag(id uint64) string {
	return `"` + strings.Trim(st.etag, `"`) + "-" + strconv.FormatUint(id, 36) + `"`
}

// Open streams one tile, for a tile over max_object_bytes or with no
// cache. The client's conditions do not go to S3 (they concern the tile,
// not the archive): the tile is sent whole.
func (s *archiveSource) Open(ctx context.Context, key string, r Request) (*origin.Object, error) {
	st, id, err := s.version(key)
	if err != nil {
		return nil, err
	}
	e, ok, err := s.entry(ctx, st, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, origin.ErrNotFound
	}
	off := st.header.TileDataOffset + e.Offset
	req := origin.Request{Tileset: s.ts.Name, Bucket: s.ts.Bucket, Key: s.ts.Archive, IfMatch: st.etag, Stream: true,
		Range: fmt.Sprintf("bytes=%d-%d", off, off+uint64(e.Length)-1)}
	obj, err := s.deps.fetch.Get(ctx, req)
	if errors.Is(err, origin.ErrChanged) {
		s.changed(st)
		return nil, fmt.Errorf("%w: %w", ErrSourceChanged, err)
	}
	if err != nil {
		return nil, err
	}
	obj.ContentType, obj.ContentEncoding, obj.ETag, obj.ContentRange = st.format.ContentType, st.format.Encoding, st.tileETag(id), ""
	obj.LastModified = st.lastModified
	obj.Size = int64(e.Length)
	if r.Head {
		obj.Body.Close()
		obj.Body = nil
	}
	return obj, nil
}

// TileJSON is built from the archive's header and metadata.
func (s *archiveSource) TileJSON(ctx context.Context, publicURL string) ([]byte, error) {
	st, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	st.tileJSONOnce.Do(func() {
		h := st.header
		var meta []byte
		if h.MetadataLength > 0 {
			if h.MetadataLength > archive.MaxMetadataBytes {
				st.tileJSONErr = s.broken(fmt.Errorf("%w: metadata of %d bytes", archive.ErrBroken, h.MetadataLength))
				return
			}
			raw, err := s.read(context.WithoutCancel(ctx), st, h.MetadataOffset, h.MetadataLength)
			if err != nil {
				st.tileJSONErr = err
				return
			}
			if meta, err = archive.Metadata(raw, h); err != nil {
				st.tileJSONErr = s.broken(err)
				return
			}
		}
		st.tileJSON, st.tileJSONErr = archive.CreateTileJSON(h, meta, strings.TrimRight(publicURL, "/")+"/tiles/"+s.ts.Name)
	})
	return st.tileJSON, st.tileJSONErr
}
