// Package logbuf batches log output. An access line per request written
// straight to stderr costs a write system call per request, which on the
// hit path is as much as the rest of tileproxy's own work; batching them
// the way nginx's "access_log ... buffer= flush=" does removes that cost.
//
// Nothing an operator needs urgently waits: records at Warn and above
// flush the batch (and everything before them, so order is kept) at once,
// and Close flushes what is left. What a crash can lose is at most one
// interval of Info and Debug lines.
package logbuf

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Config sets how much is held and for how long; zero fields take the
// defaults.
type Config struct {
	// Size is the batch size in bytes; a write that fills it flushes.
	Size int
	// Interval is the longest a line waits before it is written.
	Interval time.Duration
}

// Defaults: 64 KiB is a few hundred access lines; 100 ms is shorter than
// anyone watching a log by eye would notice.
const (
	DefaultSize     = 64 << 10
	DefaultInterval = 100 * time.Millisecond
)

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Size < 0 {
		return fmt.Errorf("logbuf: Size %d must not be negative", c.Size)
	}
	if c.Interval < 0 {
		return fmt.Errorf("logbuf: Interval %v must not be negative", c.Interval)
	}
	return nil
}

// Writer batches whole writes (one log record each) for an io.Writer.
// It is safe for concurrent use.
type Writer struct {
	cfg  Config
	out  io.Writer
	mu   sync.Mutex // protects buf, err and cfg.Size (Close sets it to 0)
	buf  []byte
	err  error // the first write error; later writes report it
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New starts a Writer on out; Close it to flush and stop its timer.
func New(cfg Config, out io.Writer) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	w := &Writer{
		cfg:  cfg,
		out:  out,
		buf:  make([]byte, 0, cfg.Size),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go w.loop()
	return w, nil
}

func (w *Writer) loop() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.Flush()
		case <-w.stop:
			return
		}
	}
}

// Write adds p to the batch, writing the batch out first when p would
// not fit. A record larger than the batch is written through at once.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf)+len(p) > w.cfg.Size {
		w.flushLocked()
		if len(p) > w.cfg.Size {
			if _, err := w.out.Write(p); err != nil && w.err == nil {
				w.err = err
			}
			return len(p), nil
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Flush writes out what is batched and reports the first write error
// seen so far.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
	return w.err
}

func (w *Writer) flushLocked() {
	if len(w.buf) == 0 {
		return
	}
	if _, err := w.out.Write(w.buf); err != nil && w.err == nil {
		w.err = err
	}
	w.buf = w.buf[:0]
}

// Close stops the timer and flushes. Writes after Close go straight to
// the underlying writer, so late lines (a shutdown message) are not lost.
func (w *Writer) Close() error {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		w.mu.Lock()
		w.flushLocked()
		w.cfg.Size = 0 // every later write is "larger than the batch"
		w.mu.Unlock()
	})
	return w.Flush()
}

// Handler wraps h, whose output goes to w, so that records at Warn and
// above are written out at once rather than with the next batch.
func Handler(h slog.Handler, w *Writer) slog.Handler {
	return &handler{Handler: h, w: w}
}

type handler struct {
	slog.Handler
	w *Writer
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.w.Flush()
	}
	return err
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{Handler: h.Handler.WithGroup(name), w: h.w}
}
