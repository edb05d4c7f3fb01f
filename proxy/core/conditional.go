package core

import (
	"strconv"
	"strings"
	"time"
)

// Conditions are a request's conditional and range header values, as
// sent ("" when absent).
type Conditions struct {
	IfMatch           string
	IfNoneMatch       string
	IfModifiedSince   string
	IfUnmodifiedSince string
	IfRange           string
	// Range holds one byte range ("bytes=0-99"). The caller drops a
	// multi-range request's Range, as a server may (RFC 9110 §14.2): a
	// multipart answer of "0-0,0-0,..." buys a large answer for a small
	// request, and no map library asks for more than one range.
	Range string
}

// None reports a request with no condition and no range: the plain path.
func (c *Conditions) None() bool { return *c == Conditions{} }

// decision is what the conditions make of a cached body.
type decision struct {
	status        int // StatusOK, StatusNotModified or StatusPartialContent
	start, length int64
	contentRange  string
}

// decide judges c against a body of size bytes with the given validators,
// exactly as net/http's ServeContent judges a file (RFC 9110 §13.2.2's
// order): If-Match, else If-Unmodified-Since (412); If-None-Match, else
// If-Modified-Since (304); then Range, unless If-Range says the client's
// copy is another (then 200). Only GET and HEAD reach here. The proxy's
// test holds it to ServeContent over a table of requests.
func (c *Conditions) decide(etag string, modtime time.Time, size int64) (decision, error) {
	pre := condNone
	if c.IfMatch != "" {
		pre = matchList(c.IfMatch, etag, strongMatch, condTrue)
	} else if c.IfUnmodifiedSince != "" && !isZeroTime(modtime) {
		if t, ok := parseHTTPTime(c.IfUnmodifiedSince); ok {
			pre = condFalse
			if modtime.Truncate(time.Second).Compare(t) <= 0 {
				pre = condTrue
			}
		}
	}
	if pre == condFalse {
		return decision{}, ErrPreconditionFailed
	}
	if c.IfNoneMatch != "" {
		// "*" or a weak match: the client has it.
		if matchList(c.IfNoneMatch, etag, weakMatch, condFalse) == condFalse {
			return decision{status: StatusNotModified}, nil
		}
	} else if c.IfModifiedSince != "" && !isZeroTime(modtime) {
		if t, ok := parseHTTPTime(c.IfModifiedSince); ok && modtime.Truncate(time.Second).Compare(t) <= 0 {
			return decision{status: StatusNotModified}, nil
		}
	}
	if c.Range == "" || !c.ifRange(etag, modtime) {
		return decision{status: StatusOK, length: size}, nil
	}
	start, length, err := parseRange(c.Range, size)
	switch {
	case err != nil:
		return decision{}, err
	case length < 0: // no range: a empty body with a range, or no range at all
		return decision{status: StatusOK, length: size}, nil
	}
	return decision{
		status: StatusPartialContent, start: start, length: length,
		contentRange: "bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(start+length-1, 10) + "/" + strconv.FormatInt(size, 10),
	}, nil
}

// ifRange reports whether the Range applies: no If-Range, or one naming
// the current representation (a strong ETag match, or its exact date).
func (c *Conditions) ifRange(etag string, modtime time.Time) bool {
	if c.IfRange == "" {
		return true
	}
	if tag, _ := scanETag(c.IfRange); tag != "" {
		return strongMatch(tag, etag)
	}
	if modtime.IsZero() {
		return false
	}
	t, ok := parseHTTPTime(c.IfRange)
	return ok && t.Unix() == modtime.Unix()
}

type condResult int

const (
	condNone condResult = iota
	condTrue
	condFalse
)

// matchList walks an If-Match or If-None-Match list: "*" and any entry
// that matches etag give onMatch; a list without a match gives the other;
// a malformed entry ends the walk as no match.
func matchList(list, etag string, match func(a, b string) bool, onMatch condResult) condResult {
	other := condTrue
	if onMatch == condTrue {
		other = condFalse
	}
	for {
		list = trimOWS(list)
		switch {
		case list == "":
			return other
		case list[0] == ',':
			list = list[1:]
			continue
		case list[0] == '*':
			return onMatch
		}
		tag, rest := scanETag(list)
		if tag == "" {
			return other
		}
		if match(tag, etag) {
			return onMatch
		}
		list = rest
	}
}

// scanETag finds a syntactically valid ETag (W/"x" or "x") at the start
// of s, and returns it and the rest; "", "" when there is none.
func scanETag(s string) (etag, rest string) {
	s = trimOWS(s)
	start := 0
	if strings.HasPrefix(s, "W/") {
		start = 2
	}
	if len(s[start:]) < 2 || s[start] != '"' {
		return "", ""
	}
	for i := start + 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == 0x21 || c >= 0x23 && c <= 0x7E || c >= 0x80:
		case c == '"':
			return s[:i+1], s[i+1:]
		default:
			return "", ""
		}
	}
	return "", ""
}

func strongMatch(a, b string) bool { return a == b && a != "" && a[0] == '"' }

func weakMatch(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

// trimOWS trims HTTP's optional whitespace (space and tab).
func trimOWS(s string) string { return strings.Trim(s, " \t") }

// isZeroTime reports a modification time that is unknown (zero or the
// Unix epoch), for which date conditions do not apply.
func isZeroTime(t time.Time) bool { return t.IsZero() || t.Unix() == 0 }

// timeFormat is HTTP's date format (net/http's TimeFormat).
const timeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// parseHTTPTime parses the three date formats HTTP allows, as
// net/http's ParseTime does.
func parseHTTPTime(s string) (time.Time, bool) {
	for _, layout := range [...]string{timeFormat, time.RFC850, time.ANSIC} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// parseRange reads one byte range of a body of size bytes as net/http
// does: start and length, length -1 when there is nothing to apply (an
// empty range list, or a range past the end of an empty body); a
// *RangeError when it is malformed or lies wholly past the end.
func parseRange(s string, size int64) (start, length int64, err error) {
	spec, ok := strings.CutPrefix(s, "bytes=")
	if !ok {
		return 0, 0, &RangeError{Size: -1}
	}
	found, noOverlap := false, false
	for ra := range strings.SplitSeq(spec, ",") {
		ra = trimOWS(ra)
		if ra == "" {
			continue
		}
		first, last, ok := strings.Cut(ra, "-")
		if !ok {
			return 0, 0, &RangeError{Size: -1}
		}
		first, last = trimOWS(first), trimOWS(last)
		if first == "" {
			// A suffix: the last n bytes.
			if last == "" || last[0] == '-' {
				return 0, 0, &RangeError{Size: -1}
			}
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return 0, 0, &RangeError{Size: -1}
			}
			n = min(n, size)
			start, length, found = size-n, n, true
			continue
		}
		i, err := strconv.ParseInt(first, 10, 64)
		if err != nil || i < 0 {
			return 0, 0, &RangeError{Size: -1}
		}
		if i >= size {
			noOverlap = true
			continue
		}
		end := size - 1
		if last != "" {
			j, err := strconv.ParseInt(last, 10, 64)
			if err != nil || i > j {
				return 0, 0, &RangeError{Size: -1}
			}
			end = min(j, size-1)
		}
		start, length, found = i, end-i+1, true
	}
	switch {
	case found:
		return start, length, nil
	case noOverlap && size == 0:
		// Some clients send a Range with every request; an empty body
		// gets a 200, not a 416.
		return 0, -1, nil
	case noOverlap:
		return 0, 0, &RangeError{Size: size}
	}
	return 0, -1, nil
}
