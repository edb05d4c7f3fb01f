// Package audit keeps the audit trail (docs/audit.md): one JSON line per
// tile answer and per denial, written before the answer is sent into a
// file mapped shared into memory, so that a line is in the kernel's page
// cache (and survives kill -9) the moment it is copied; rotated at a size,
// kept or shipped to S3, and read back by `tileproxy audit`.
package audit

import (
	"strconv"
	"sync/atomic"
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

// lineHead is what every line of a writer has after its time:
// `","replica":"<replica>","id":"<prefix>-`.
func lineHead(replica, idPrefix string) string {
	b := accesslog.AppendJSONString([]byte(`","replica":`), replica)
	return string(append(append(append(b, `,"id":"`...), idPrefix...), '-'))
}

// appendLine writes l as one JSON object and a newline; head is
// lineHead's, and ts keeps the last second's text.
func appendLine(b []byte, l *Line, head string, ts *timeText, clear bool) []byte {
	b = append(b, `{"time":"`...)
	b = ts.append(b, l.Time)
	b = append(b, head...)
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

// timeText keeps the text of the last second written, so that a line
// writes only its milliseconds: a line's time was a third of its cost.
// Safe for concurrent use.
type timeText struct{ last atomic.Pointer[secondText] }

type secondText struct {
	sec  int64
	text []byte // 2006-01-02T15:04:05.
}

// append writes t as appendTime does.
func (tt *timeText) append(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := t.Unix()
	st := tt.last.Load()
	if st == nil || st.sec != sec {
		full := appendTime(nil, t)
		st = &secondText{sec: sec, text: full[:len(full)-4]}
		tt.last.Store(st)
	}
	b = append(b, st.text...)
	b = appendDigits(b, t.Nanosecond()/1e6, 3)
	return append(b, 'Z')
}

// appendTime writes t in UTC as 2006-01-02T15:04:05.000Z, by hand.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, min, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond()/1e6, 3)
	return append(b, 'Z')
}

// appendDigits writes v in exactly n decimal digits.
func appendDigits(b []byte, v, n int) []byte {
	var d [4]byte
	for i := n - 1; i >= 0; i-- {
		d[i] = byte('0' + v%10)
		v /= 10
	}
	return append(b, d[:n]...)
}
