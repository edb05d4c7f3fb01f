// Package origin fetches tile objects from S3 (or any S3-compatible store)
// with the AWS SDK. The proxy sees only the Fetcher interface and the
// sentinel errors here, never an SDK type, so it can be tested with a map.
package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Request asks for one object. Conditional and range fields are passed to
// S3 as they are; empty fields are not sent.
type Request struct {
	// Tileset selects the credentials (one set per tileset with a role).
	Tileset string
	Bucket  string
	Key     string
	// IfNoneMatch is an ETag list, sent as If-None-Match.
	IfNoneMatch string
	// IfMatch is an ETag the object must still have (If-Match): a ranged
	// read of an archive fails with ErrChanged once it was replaced.
	IfMatch string
	// IfModifiedSince is sent when non-zero.
	IfModifiedSince time.Time
	// Range is an HTTP Range header value ("bytes=0-99").
	Range string
	// HeadOnly asks for metadata only (HeadObject); Object.Body is nil.
	HeadOnly bool
	// Stream says the body goes to a client at the client's pace: a
	// Guard frees the request's slot at the headers, not at Close.
	Stream bool
}

// Object is an origin response. The caller must Close Body when non-nil.
type Object struct {
	Body io.ReadCloser
	// Size is the length of Body (of the range, for a 206); -1 if unknown.
	Size int64
	// TotalSize is the whole object's size, from Content-Range on a 206.
	TotalSize       int64
	ContentType     string
	ContentEncoding string
	ETag            string
	LastModified    time.Time
	// ContentRange is set when Range was honoured (the answer is a 206).
	ContentRange string
}

// Fetcher gets objects from the origin.
type Fetcher interface {
	Get(ctx context.Context, req Request) (*Object, error)
}

// FetcherFunc adapts a function to Fetcher.
type FetcherFunc func(ctx context.Context, req Request) (*Object, error)

// Get calls f.
func (f FetcherFunc) Get(ctx context.Context, req Request) (*Object, error) { return f(ctx, req) }

// Sentinel errors: what the proxy decides on. Errors from Get match one of
// them with errors.Is (or are the caller's own context error).
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("origin: object not found")
	// ErrNotModified: a conditional request matched (HTTP 304).
	ErrNotModified = errors.New("origin: not modified")
	// ErrChanged: If-Match failed, the object was replaced (HTTP 412).
	ErrChanged = errors.New("origin: object changed")
	// ErrRangeNotSatisfiable: the Range lies outside the object (HTTP 416).
	ErrRangeNotSatisfiable = errors.New("origin: range not satisfiable")
	// ErrDenied: the origin refused our credentials (AccessDenied, bad or
	// expired keys, missing bucket). The proxy is misconfigured: 502.
	ErrDenied = errors.New("origin: access denied")
	// ErrUnavailable: the origin or STS could not be reached or failed: 502.
	ErrUnavailable = errors.New("origin: unavailable")
	// ErrTimeout: no response within the configured timeout: 504.
	ErrTimeout = errors.New("origin: timeout")
)

// Error carries what an operator needs to chase an origin failure: the
// operation, AWS error code and request ID. It is for logs only; the
// proxy's responses never include it.
type Error struct {
	Kind      error // one of the sentinels above
	Op        string
	Code      string
	RequestID string
	Err       error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %v", e.Op, e.Kind)
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the sentinel and the cause to errors.Is/As.
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }
