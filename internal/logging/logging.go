// Package logging builds the process's log output from config.Log: events
// through log/slog, the access line through accesslog (which skips
// slog's generic formatting), both into one stream batched by logbuf so
// that a request does not cost a write.
package logging

import (
	"io"
	"log/slog"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/logbuf"
)

// Logs is where the process writes. Close it before exiting: it flushes
// what is batched.
type Logs struct {
	// Log takes events.
	Log *slog.Logger
	// Access takes the access lines; nil when log.access is off or
	// log.level is above info.
	Access *accesslog.Logger
	close  func() error
}

// New builds the logs for c, writing to w. c is validated already.
func New(c config.Log, w io.Writer) *Logs {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	l := &Logs{close: func() error { return nil }}
	if lw, err := logbuf.New(logbuf.Config{}, w); err == nil { // the defaults cannot fail
		l.Log = slog.New(logbuf.Handler(handler(c.Format, lw, opts), lw))
		w, l.close = lw, lw.Close
	} else {
		l.Log = slog.New(handler(c.Format, w, opts))
	}
	if c.Access && level <= slog.LevelInfo {
		l.Access = accesslog.New(accesslog.ParseFormat(c.Format), w)
	}
	return l
}

// Close flushes what is batched and stops the flusher.
func (l *Logs) Close() error { return l.close() }

func handler(format string, w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}
