package accesslog

import "strings"

// Redacted replaces each JWT-shaped string in a logged value.
const Redacted = "[jwt]"

// RedactTokens returns s with every JWT-shaped run replaced by Redacted:
// base64url segments joined by dots, at least three of them (JWS) and up
// to five (JWE), the first at least 8 characters long and starting as a
// JSON object's "{" followed by a quote or white space does when encoded
// (eyJ, eyA, ewo, ew0, ewk), the second at least 2. A token pasted into a
// path (…/0.png;access_token=eyJ…) must not reach the log. s comes back
// as it is, with no allocation, when it holds no token.
//
// The scan is linear in len(s): whether a run starting inside a segment
// is a token depends only on what follows that segment, so after one
// start fails the rest of its segment is skipped.
func RedactTokens(s string) string {
	var b strings.Builder
	last := 0 // s[last:i] is not yet copied to b
	for i := 0; i+3 <= len(s); {
		if !jwtPrefix(s[i : i+3]) {
			i++
			continue
		}
		end, ok := jwtAt(s, i)
		if !ok {
			i = end
			continue
		}
		if b.Len() == 0 {
			b.Grow(len(s))
		}
		b.WriteString(s[last:i])
		b.WriteString(Redacted)
		last, i = end, end
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func jwtPrefix(p string) bool {
	switch p {
	case "eyJ", "eyA", "ewo", "ew0", "ewk":
		return true
	}
	return false
}

// jwtAt reports whether a JWT-shaped run starts at s[i] and where it
// ends; when it does not, end is the end of s[i]'s segment.
func jwtAt(s string, i int) (end int, ok bool) {
	seg := func(j int) int { // the end of the base64url run from j
		for j < len(s) && b64url(s[j]) {
			j++
		}
		return j
	}
	first := seg(i)
	if first-i < 8 {
		return first, false
	}
	e, segs := first, 1
	for segs < 5 && e < len(s) && s[e] == '.' {
		n := seg(e + 1)
		if segs == 1 && n-(e+1) < 2 {
			return first, false
		}
		e, segs = n, segs+1
	}
	if segs < 3 {
		return first, false
	}
	return e, true
}

func b64url(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
