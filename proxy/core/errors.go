package core

import (
	"errors"

	"github.com/tileproxy/tileproxy/origin"
)

// Decisions the core makes itself; auth and origin supply the rest. The
// proxy maps every one of them to a status in one place.
var (
	// ErrUnknownTileset: no tileset of that name is configured.
	ErrUnknownTileset = errors.New("unknown tileset")
	// ErrNotFound: the tileset has no such tile.
	ErrNotFound = errors.New("not found")
	// ErrBadPath: the object path cannot name an object (empty, or too long).
	ErrBadPath = errors.New("bad path")
	// ErrPreconditionFailed: If-Match or If-Unmodified-Since failed (412).
	ErrPreconditionFailed = errors.New("precondition failed")
)

// RangeError is a Range the body cannot satisfy (416). Size is the body's
// length, for Content-Range "bytes */Size" when the range lay beyond it;
// -1 when the Range was malformed.
type RangeError struct{ Size int64 }

func (e *RangeError) Error() string { return "range not satisfiable" }

// Is makes a RangeError match origin.ErrRangeNotSatisfiable, as an
// origin's 416 does: one decision, wherever it was made.
func (e *RangeError) Is(target error) bool { return target == origin.ErrRangeNotSatisfiable }

// Status codes the core answers with, as net/http numbers them.
const (
	StatusOK             = 200
	StatusNoContent      = 204
	StatusPartialContent = 206
	StatusNotModified    = 304
)
