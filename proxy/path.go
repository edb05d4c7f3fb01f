package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/tileproxy/tileproxy/proxy/core"
)

// maxPathBytes bounds the whole request path: a key plus the route.
const maxPathBytes = core.MaxKeyBytes + 128

// rawPath is the request path exactly as the client sent it, before Go's
// URL parsing decoded anything.
func rawPath(r *http.Request) string {
	p := r.RequestURI
	if p == "" || p[0] != '/' { // absolute-form or synthetic request
		return r.URL.EscapedPath()
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

// checkPath judges the raw path before ServeMux sees it: the mux would
// answer "..", "." and "//" with a redirect to a cleaned path, and a
// redirect is a way around checks, so every such form is a 400 here.
// Percent-encoded separators, dots, backslashes, NUL and '%' itself
// (double encoding) are refused outright: no tile needs them.
func checkPath(raw string) error {
	if len(raw) > maxPathBytes {
		return fmt.Errorf("%w: longer than %d bytes", core.ErrBadPath, maxPathBytes)
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f || c == '\\':
			return fmt.Errorf("%w: control character or backslash", core.ErrBadPath)
		case c == '%':
			if i+2 >= len(raw) {
				return fmt.Errorf("%w: truncated escape", core.ErrBadPath)
			}
			switch strings.ToLower(raw[i+1 : i+3]) {
			case "2e", "2f", "5c", "00", "25":
				return fmt.Errorf("%w: encoded dot, slash, backslash, NUL or percent", core.ErrBadPath)
			}
		}
	}
	dec, err := url.PathUnescape(raw)
	if err != nil {
		return fmt.Errorf("%w: bad escape", core.ErrBadPath)
	}
	if !utf8.ValidString(dec) {
		// Overlong encodings such as %c0%ae are invalid UTF-8.
		return fmt.Errorf("%w: invalid UTF-8", core.ErrBadPath)
	}
	for i := 0; i < len(dec); i++ {
		if dec[i] < 0x20 || dec[i] == 0x7f {
			return fmt.Errorf("%w: control character", core.ErrBadPath)
		}
	}
	if dec == "/" {
		return nil
	}
	if !strings.HasPrefix(dec, "/") {
		return fmt.Errorf("%w: not absolute", core.ErrBadPath)
	}
	// Walk the segments without splitting (no allocation per request).
	rest := dec[1:]
	for {
		seg, more, found := strings.Cut(rest, "/")
		switch seg {
		case ".", "..":
			return fmt.Errorf("%w: dot segment", core.ErrBadPath)
		case "":
			// Only a trailing slash is allowed; "//" anywhere is refused.
			if found {
				return fmt.Errorf("%w: empty segment", core.ErrBadPath)
			}
		}
		if !found {
			return nil
		}
		rest = more
	}
}
