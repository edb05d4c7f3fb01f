package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/exfil"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy/core"
)

// Decisions the proxy makes itself; auth and origin supply the rest.
var (
	errMethod = errors.New("method not allowed")
	// errOriginNotAllowed: a CORS preflight from an origin not configured.
	errOriginNotAllowed = errors.New("origin not allowed")
)

// StatusClientClosed is logged and counted when the client went away
// before an answer (nginx's 499); nothing is written to it.
const StatusClientClosed = 499

// errorStatus is the one place an error becomes a status code and a short
// public message. The message is fixed per status: internal detail (key,
// bucket, AWS message) stays in the logs.
func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, core.ErrBadPath):
		return http.StatusBadRequest, "bad path"
	case errors.Is(err, auth.ErrNoToken):
		return http.StatusUnauthorized, "missing token"
	case errors.Is(err, auth.ErrInvalid):
		return http.StatusUnauthorized, "invalid token"
	case errors.Is(err, errOriginNotAllowed):
		return http.StatusForbidden, "origin not allowed"
	case errors.Is(err, auth.ErrNotGranted):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, core.ErrOutsideGrant):
		return http.StatusForbidden, "outside grant"
	case errors.Is(err, core.ErrUnknownTileset):
		return http.StatusNotFound, "unknown tileset"
	case errors.Is(err, core.ErrNotFound), errors.Is(err, origin.ErrNotFound):
		return http.StatusNotFound, "not found"
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "method not allowed"
	case errors.Is(err, origin.ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable, "range not satisfiable"
	case errors.Is(err, context.Canceled):
		return StatusClientClosed, ""
	case errors.Is(err, core.ErrPreconditionFailed):
		return http.StatusPreconditionFailed, "precondition failed"
	case errors.Is(err, core.ErrLimited), errors.Is(err, exfil.ErrRate):
		return http.StatusTooManyRequests, "too many requests"
	case errors.Is(err, exfil.ErrQuota):
		return http.StatusTooManyRequests, "quota exceeded"
	case errors.Is(err, exfil.ErrSweep), errors.Is(err, exfil.ErrThrottled):
		return http.StatusTooManyRequests, "too many distinct tiles"
	case errors.Is(err, exfil.ErrStoreDown):
		return http.StatusServiceUnavailable, "limits unavailable"
	case errors.Is(err, origin.ErrSaturated), errors.Is(err, cache.ErrChurn):
		return http.StatusServiceUnavailable, "origin busy"
	case errors.Is(err, origin.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "origin timeout"
	case errors.Is(err, origin.ErrDenied), errors.Is(err, origin.ErrUnavailable):
		return http.StatusBadGateway, "origin error"
	}
	return http.StatusInternalServerError, "internal error"
}

// refusal is the bounded reason a request was refused for, as the access
// line gives it ("" when it was not refused), and whether it is a token
// or grant refusal (counted in auth_failures_total; the limits count
// theirs in limited_total).
func refusal(err error) (reason string, authFailure bool) {
	if err == nil {
		return "", false
	}
	if errors.Is(err, core.ErrOutsideGrant) {
		return "outside_grant", true
	}
	if r := exfil.Reason(err); r != "" {
		return r, false
	}
	if r := auth.Reason(err); r != "other" {
		return r, true
	}
	return "", false
}

// writeError answers err and returns the status it chose.
func writeError(w http.ResponseWriter, err error, allow string) int {
	code, msg := errorStatus(err)
	if code == StatusClientClosed {
		return code
	}
	h := w.Header()
	// Headers set for a success must not leak onto an error answer.
	for _, k := range []string{"Etag", "Last-Modified", "Content-Encoding", "Content-Range", "Content-Length", "Accept-Ranges", "X-Cache"} {
		delete(h, k)
	}
	switch code {
	case http.StatusUnauthorized:
		if errors.Is(err, auth.ErrNoToken) {
			h.Set("WWW-Authenticate", `Bearer realm="tileproxy"`)
		} else {
			h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
	case http.StatusForbidden:
		if errors.Is(err, core.ErrOutsideGrant) {
			h.Set("WWW-Authenticate", `Bearer error="outside_grant"`)
		}
	case http.StatusMethodNotAllowed:
		h.Set("Allow", allow)
	case http.StatusServiceUnavailable:
		h.Set("Retry-After", "1")
	case http.StatusTooManyRequests:
		var le *core.LimitedError
		var xr *exfil.Refusal
		switch {
		case errors.As(err, &le):
			h.Set("Retry-After", strconv.Itoa(le.RetryAfterSeconds()))
		case errors.As(err, &xr):
			h.Set("Retry-After", strconv.Itoa(xr.RetryAfterSeconds()))
			if xr.Policy != "" {
				h.Set("RateLimit-Policy", xr.Policy)
				h.Set("RateLimit", xr.Limit)
			}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		var re *core.RangeError
		if errors.As(err, &re) && re.Size >= 0 {
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(re.Size, 10))
		}
	}
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write([]byte(msg + "\n"))
	return code
}
