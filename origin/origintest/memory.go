// Package origintest provides an in-memory origin.Fetcher for unit tests:
// a map of objects with S3's conditional and range behaviour, counting
// every call and recording the requests it saw.
package origintest

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tileproxy/tileproxy/origin"
)

// Object is one stored object.
type Object struct {
	Body            []byte
	ContentType     string
	ContentEncoding string
	LastModified    time.Time
}

// Memory is a Fetcher over a map keyed "bucket/key".
type Memory struct {
	mu      sync.Mutex // protects objects and reqs
	objects map[string]Object
	reqs    []origin.Request
	// Err, when set, is returned by every Get (after counting it).
	Err   error
	Calls atomic.Int64
}

var _ origin.Fetcher = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory { return &Memory{objects: map[string]Object{}} }

// Put stores an object.
func (m *Memory) Put(bucket, key string, o Object) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if o.LastModified.IsZero() {
		o.LastModified = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	m.objects[bucket+"/"+key] = o
}

// Delete removes an object.
func (m *Memory) Delete(bucket, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, bucket+"/"+key)
}

// Requests returns a copy of the requests seen so far.
func (m *Memory) Requests() []origin.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]origin.Request(nil), m.reqs...)
}

// ETag is the ETag Memory gives body (S3's for a single-part upload).
func ETag(body []byte) string {
	s := md5.Sum(body)
	return `"` + hex.EncodeToString(s[:]) + `"`
}

// Get implements origin.Fetcher.
func (m *Memory) Get(ctx context.Context, req origin.Request) (*origin.Object, error) {
	m.Calls.Add(1)
	m.mu.Lock()
	m.reqs = append(m.reqs, req)
	o, ok := m.objects[req.Bucket+"/"+req.Key]
	err := m.Err
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !ok {
		return nil, &origin.Error{Kind: origin.ErrNotFound, Op: "GetObject", Code: "NoSuchKey"}
	}
	etag := ETag(o.Body)
	if req.IfMatch != "" && req.IfMatch != etag && req.IfMatch != "*" {
		return nil, &origin.Error{Kind: origin.ErrChanged, Op: "GetObject", Code: "PreconditionFailed"}
	}
	if req.IfNoneMatch != "" && (req.IfNoneMatch == "*" || strings.Contains(req.IfNoneMatch, etag)) {
		return nil, &origin.Error{Kind: origin.ErrNotModified, Op: "GetObject"}
	}
	if !req.IfModifiedSince.IsZero() && !o.LastModified.Truncate(time.Second).After(req.IfModifiedSince) {
		return nil, &origin.Error{Kind: origin.ErrNotModified, Op: "GetObject"}
	}
	obj := &origin.Object{
		Size:            int64(len(o.Body)),
		TotalSize:       int64(len(o.Body)),
		ContentType:     o.ContentType,
		ContentEncoding: o.ContentEncoding,
		ETag:            etag,
		LastModified:    o.LastModified,
	}
	body := o.Body
	if req.Range != "" {
		start, end, err := parseRange(req.Range, int64(len(body)))
		if err != nil {
			return nil, err
		}
		body = body[start : end+1]
		obj.Size = int64(len(body))
		obj.ContentRange = fmt.Sprintf("bytes %d-%d/%d", start, end, len(o.Body))
	}
	if !req.HeadOnly {
		obj.Body = io.NopCloser(bytes.NewReader(body))
	}
	return obj, nil
}

// parseRange handles the single ranges S3 supports: a-b, a-, -n.
func parseRange(h string, size int64) (int64, int64, error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	bad := &origin.Error{Kind: origin.ErrRangeNotSatisfiable, Op: "GetObject"}
	if !ok || strings.Contains(spec, ",") {
		return 0, size - 1, nil // S3 ignores what it does not support
	}
	a, b, _ := strings.Cut(spec, "-")
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, bad
		}
		return max(0, size-n), size - 1, nil
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start >= size {
		return 0, 0, bad
	}
	end := size - 1
	if b != "" {
		if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
			return 0, 0, bad
		}
		end = min(end, size-1)
	}
	return start, end, nil
}
