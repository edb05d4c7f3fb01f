// Package accesslog writes tileproxy's access line: one per request, in
// exactly the shape log/slog's JSONHandler or TextHandler would print it,
// so the process's log stays one uniform stream.
//
// It exists because the generic path costs: building a slog.Record and
// formatting eight attributes through a handler took as long as the rest
// of a cache hit. Here each field is appended into a reused buffer by code
// that knows its type, and the line is handed to the writer in one Write.
package accesslog

import (
	"io"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format selects the line shape.
type Format int

const (
	// Text is slog.TextHandler's key=value shape.
	Text Format = iota
	// JSON is slog.JSONHandler's object-per-line shape.
	JSON
)

// ParseFormat maps the config's log.format ("text" or "json").
func ParseFormat(s string) Format {
	if s == "json" {
		return JSON
	}
	return Text
}

// Line is what one request leaves in the log. Empty optional fields
// (Proto, Tileset, Cache, Subject, Reason, Err) are left out of the line.
type Line struct {
	Time   time.Time
	Method string
	// Proto is the request's protocol as net/http names it: HTTP/1.1,
	// HTTP/2.0.
	Proto    string
	Path     string
	Status   int
	Bytes    int64
	Duration time.Duration
	Tileset  string
	Cache    string
	Subject  string
	// Reason is a refusal's bounded reason (expired, not_granted,
	// outside_grant, ...), as tileproxy_auth_failures_total counts it.
	Reason string
	Err    string
}

// Logger appends Lines to an io.Writer; it is safe for concurrent use as
// long as the writer's Write is (each line is one Write call).
type Logger struct {
	w      io.Writer
	format Format
	bufs   sync.Pool
}

// New returns a Logger writing format to w.
func New(format Format, w io.Writer) *Logger {
	return &Logger{w: w, format: format, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
}

// Log writes l as one line. Write errors are dropped, as slog drops them:
// a full disk must not fail the request being logged.
func (lg *Logger) Log(l *Line) {
	bp := lg.bufs.Get().(*[]byte)
	b := (*bp)[:0]
	if lg.format == JSON {
		b = appendJSON(b, l)
	} else {
		b = appendText(b, l)
	}
	lg.w.Write(b)
	if cap(b) <= 4<<10 { // an outsized line (a long error) is not kept
		*bp = b
		lg.bufs.Put(bp)
	}
}

// AppendLine appends l in format to b: Log without the write, for tests
// and benchmarks.
func AppendLine(b []byte, format Format, l *Line) []byte {
	if format == JSON {
		return appendJSON(b, l)
	}
	return appendText(b, l)
}

func appendJSON(b []byte, l *Line) []byte {
	b = append(b, `{"time":"`...)
	b = l.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":"INFO","msg":"request","method":`...)
	b = AppendJSONString(b, l.Method)
	b = append(b, `,"path":`...)
	b = AppendJSONString(b, l.Path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(l.Status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, l.Bytes, 10)
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(l.Duration), 10)
	for _, f := range [...]struct{ key, val string }{
		{`,"proto":`, l.Proto}, {`,"tileset":`, l.Tileset}, {`,"cache":`, l.Cache}, {`,"subject":`, l.Subject}, {`,"reason":`, l.Reason}, {`,"err":`, l.Err},
	} {
		if f.val != "" {
			b = append(b, f.key...)
			b = AppendJSONString(b, f.val)
		}
	}
	return append(b, "}\n"...)
}

func appendText(b []byte, l *Line) []byte {
	b = append(b, "time="...)
	b = l.Time.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " level=INFO msg=request method="...)
	b = appendTextString(b, l.Method)
	b = append(b, " path="...)
	b = appendTextString(b, l.Path)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(l.Status), 10)
	b = append(b, " bytes="...)
	b = strconv.AppendInt(b, l.Bytes, 10)
	b = append(b, " duration="...)
	b = appendTextString(b, l.Duration.String())
	for _, f := range [...]struct{ key, val string }{
		{" proto=", l.Proto}, {" tileset=", l.Tileset}, {" cache=", l.Cache}, {" subject=", l.Subject}, {" reason=", l.Reason}, {" err=", l.Err},
	} {
		if f.val != "" {
			b = append(b, f.key...)
			b = appendTextString(b, f.val)
		}
	}
	return append(b, '\n')
}

// appendTextString quotes s when slog's TextHandler would: when it is
// empty or holds a space, '=', '"' or anything unprintable.
func appendTextString(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == ' ' || c == '=' || c == '"' || c < 0x20 {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

const hexDigits = "0123456789abcdef"

// AppendJSONString writes s as a JSON string the way slog does: control
// characters, quotes and backslashes escaped, invalid UTF-8 as U+FFFD,
// U+2028/9 escaped. The audit trail writes its strings with it too.
func AppendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
