// Package audit keeps the audit trail (docs/audit.md): one JSON line per
// tile answer and per denial, written before the answer is sent into a
// file mapped shared into memory, so that a line is in the kernel's page
// cache (and survives kill -9) the moment it is copied; rotated at a size,
// kept or shipped to S3, and read back by `tileproxy audit`.
package audit

import (
	"strconv"
	"time"

	"github.com/tileproxy/tileproxy/internal/accesslog"
)

// Line is one audited answer.
type Line struct {
	Time time.Time
	// Seq numbers the request within its process; the line's id is the
	// writer's per-process prefix and Seq.
	Seq uint64
	// Principal is the principal's key (a hash of issuer and subject),
	// "" when no token was verified; Issuer and Subject are written only
	// with subjects: clear.
	Principal, Issuer, Subject string
	Tileset                    string
	// Path is the path within the tileset, tokens in it cut out.
	Path   string
	Status int
	Bytes  int64
	Cache  string
	// Reason is a refusal's reason (invalid_token's, not_granted,
	// outside_grant, quota, sweep, revoked, ...).
	Reason string
}

// appendLine writes l as one JSON object and a newline.
func appendLine(b []byte, l *Line, replica, idPrefix string, clear bool) []byte {
	b = append(b, `{"time":"`...)
	b = l.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","replica":`...)
	b = accesslog.AppendJSONString(b, replica)
	b = append(b, `,"id":"`...)
	b = append(b, idPrefix...)
	b = append(b, '-')
	b = strconv.AppendUint(b, l.Seq, 36)
	b = append(b, '"')
	if l.Principal != "" {
		b = append(b, `,"principal":`...)
		b = accesslog.AppendJSONString(b, l.Principal)
	}
	if clear {
		if l.Issuer != "" {
			b = append(b, `,"iss":`...)
			b = accesslog.AppendJSONString(b, l.Issuer)
		}
		if l.Subject != "" {
			b = append(b, `,"sub":`...)
			b = accesslog.AppendJSONString(b, l.Subject)
		}
	}
	b = append(b, `,"tileset":`...)
	b = accesslog.AppendJSONString(b, l.Tileset)
	b = append(b, `,"path":`...)
	b = accesslog.AppendJSONString(b, l.Path)
	if z, x, y, ok := tileOf(l.Path); ok {
		b = append(b, `,"z":`...)
		b = strconv.AppendUint(b, uint64(z), 10)
		b = append(b, `,"x":`...)
		b = strconv.AppendUint(b, uint64(x), 10)
		b = append(b, `,"y":`...)
		b = strconv.AppendUint(b, uint64(y), 10)
	}
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(l.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, l.Bytes, 10)
	if l.Cache != "" {
		b = append(b, `,"cache":`...)
		b = accesslog.AppendJSONString(b, l.Cache)
	}
	if l.Reason != "" {
		b = append(b, `,"reason":`...)
		b = accesslog.AppendJSONString(b, l.Reason)
	}
	return append(b, "}\n"...)
}

// tileOf reads z/x/y from a path "{z}/{x}/{y}.{ext}".
func tileOf(path string) (z uint8, x, y uint32, ok bool) {
	var n [3]uint64
	i := 0
	for k := range n {
		start := i
		for i < len(path) && path[i] >= '0' && path[i] <= '9' && i-start < 10 {
			n[k] = n[k]*10 + uint64(path[i]-'0')
			i++
		}
		sep := byte('/')
		if k == 2 {
			sep = '.'
		}
		if i == start || i >= len(path) || path[i] != sep {
			return 0, 0, 0, false
		}
		i++
	}
	if n[0] > 30 || n[1] >= 1<<n[0] || n[2] >= 1<<n[0] {
		return 0, 0, 0, false
	}
	return uint8(n[0]), uint32(n[1]), uint32(n[2]), true
}
