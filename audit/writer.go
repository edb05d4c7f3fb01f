package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrFull: a line larger than the whole file was refused.
var ErrFull = errors.New("audit: line larger than audit.max_bytes")

// Config is what a Writer writes where.
type Config struct {
	// Path is the active file; rotated files go beside it.
	Path     string
	MaxBytes int64
	// Keep is how many rotated files stay (when nothing ships them).
	Keep    int
	Replica string
	// Clear writes issuers and subjects as they are.
	Clear bool
}

// Metrics is what a Writer reports.
type Metrics interface {
	// AuditLine counts a line by result: written, or error.
	AuditLine(result string)
}

// Deps are what a Writer works with.
type Deps struct {
	Now     func() time.Time
	Log     *slog.Logger
	Metrics Metrics
	// Rotated is told of every rotated file (and of those a crash left,
	// at Open), to ship it; it owns the file from then on. Nil keeps
	// Config.Keep of them.
	Rotated func(path string)
}

// Writer appends lines to the trail. The active file is allocated whole
// (max_bytes, fallocate: a full disk is an error at rotation, not a
// SIGBUS at a write) and mapped shared: a line is in the page cache once
// copied, before its answer is sent, and a crash of the process loses
// none. Lines never hold a NUL, so the used part of a file ends at its
// first NUL byte.
type Writer struct {
	cfg  Config
	deps Deps

	mu    sync.Mutex
	f     *os.File
	m     []byte // the mapping; nil after a failed rotation
	off   int
	first time.Time // of the first line in the active file
	last  time.Time
	err   error // the last disk error, until a rotation succeeds
	bufs  sync.Pool
	// idPrefix starts every line's id: random per process, so ids of
	// several processes (and restarts) never collide.
	idPrefix string
	seq      atomic.Uint64
}

// Next is the sequence number of the next request.
func (w *Writer) Next() uint64 { return w.seq.Add(1) }

// Open recovers what a crash left at cfg.Path (its used part becomes a
// rotated file, handed to Rotated) and starts a new active file.
func Open(cfg Config, deps Deps) (*Writer, error) {
	w := &Writer{cfg: cfg, deps: deps, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}}
	var id [6]byte
	rand.Read(id[:])
	w.idPrefix = hex.EncodeToString(id[:])
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("audit.path: %w", err)
	}
	if err := w.recover(); err != nil {
		return nil, err
	}
	if err := w.openActive(); err != nil {
		return nil, err
	}
	for _, p := range w.rotatedFiles() {
		if deps.Rotated != nil {
			deps.Rotated(p) // shipped at start: left by a crash, or not shipped before
		}
	}
	w.prune()
	return w, nil
}

// Record writes l before its answer is sent. The error is also kept for
// readiness (Err) and counted.
func (w *Writer) Record(l *Line) error {
	bp := w.bufs.Get().(*[]byte)
	b := appendLine((*bp)[:0], l, w.cfg.Replica, w.idPrefix, w.cfg.Clear)
	err := w.write(b, l.Time)
	*bp = b
	w.bufs.Put(bp)
	if err != nil {
		w.deps.Metrics.AuditLine("error")
		return err
	}
	w.deps.Metrics.AuditLine("written")
	return nil
}

func (w *Writer) write(b []byte, t time.Time) error {
	if len(b) > int(w.cfg.MaxBytes) {
		return ErrFull
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil || w.off+len(b) > len(w.m) {
		if err := w.rotateLocked(); err != nil {
			return err
		}
	}
	copy(w.m[w.off:], b)
	w.off += len(b)
	if w.first.IsZero() {
		w.first = t
	}
	w.last = t
	return nil
}

// Err is the last disk error, nil once writing works again.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Rotate closes the active file as a rotated one now (tests; shutdown
// leaves it active, to be recovered at the next start).
func (w *Writer) Rotate() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rotateLocked()
}

// Close unmaps the active file and cuts it to its used part; the next
// Open rotates it.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closeActive()
}

func (w *Writer) closeActive() error {
	if w.f == nil {
		return nil
	}
	var errs []error
	if w.m != nil {
		errs = append(errs, syscall.Munmap(w.m))
		w.m = nil
	}
	errs = append(errs, w.f.Truncate(int64(w.off)), w.f.Close())
	w.f = nil
	return errors.Join(errs...)
}

// rotateLocked closes the active file, names it by replica and time span,
// and opens a new one.
func (w *Writer) rotateLocked() error {
	var rotated string
	if w.f != nil && w.off > 0 {
		if err := w.closeActive(); err != nil {
			return w.fail(err)
		}
		rotated = w.rotatedName(w.first, w.last)
		if err := os.Rename(w.cfg.Path, rotated); err != nil {
			return w.fail(err)
		}
	} else if err := w.closeActive(); err != nil {
		return w.fail(err)
	}
	if err := w.openActive(); err != nil {
		return w.fail(err)
	}
	w.err = nil
	if rotated != "" {
		if w.deps.Rotated != nil {
			w.deps.Rotated(rotated)
		}
		w.prune()
	}
	return nil
}

func (w *Writer) fail(err error) error {
	err = fmt.Errorf("audit: %w", err)
	if w.err == nil {
		w.deps.Log.Error("audit trail cannot be written; answers that need a line are refused until it can", "err", err)
	}
	w.err = err
	return err
}

// openActive creates the active file, allocated and mapped whole.
func (w *Writer) openActive() error {
	f, err := os.OpenFile(w.cfg.Path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("audit.path: %w", err)
	}
	if err := allocate(f, w.cfg.MaxBytes); err != nil {
		f.Close()
		os.Remove(w.cfg.Path)
		return fmt.Errorf("audit.path: allocating %d bytes: %w", w.cfg.MaxBytes, err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(w.cfg.MaxBytes), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		f.Close()
		return fmt.Errorf("audit.path: mmap: %w", err)
	}
	w.f, w.m, w.off, w.first, w.last = f, m, 0, time.Time{}, time.Time{}
	return nil
}

// recover turns what a crash (or a stop) left at Path into a rotated
// file: its used part, up to the last whole line.
func (w *Writer) recover() error {
	data, err := os.ReadFile(w.cfg.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("audit.path: %w", err)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1] // a line cut by the crash is not a line
	if len(data) == 0 {
		return os.Remove(w.cfg.Path)
	}
	if err := os.Truncate(w.cfg.Path, int64(len(data))); err != nil {
		return fmt.Errorf("audit.path: %w", err)
	}
	first, last := lineTime(data[:bytes.IndexByte(data, '\n')]), lineTime(lastLine(data))
	return os.Rename(w.cfg.Path, w.rotatedName(first, last))
}

func lastLine(data []byte) []byte {
	data = data[:len(data)-1]
	return data[bytes.LastIndexByte(data, '\n')+1:]
}

// lineTime is the time a line starts with; zero when it has none.
func lineTime(line []byte) time.Time {
	const key = `{"time":"`
	if !bytes.HasPrefix(line, []byte(key)) || len(line) < len(key)+24 {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, string(line[len(key):len(key)+24]))
	return t
}

// stamp is a file name's form of a time.
const stamp = "20060102T150405.000Z"

// rotatedName is <base>-<replica>-<first>-<last>.jsonl beside Path:
// files of several replicas (and shipped keys) never collide.
func (w *Writer) rotatedName(first, last time.Time) string {
	base := strings.TrimSuffix(w.cfg.Path, filepath.Ext(w.cfg.Path))
	name := fmt.Sprintf("%s-%s-%s-%s", base, w.cfg.Replica, first.UTC().Format(stamp), last.UTC().Format(stamp))
	p := name + ".jsonl"
	for i := 1; ; i++ {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
		p = fmt.Sprintf("%s.%d.jsonl", name, i)
	}
}

// rotatedFiles are the rotated files beside Path, oldest first.
func (w *Writer) rotatedFiles() []string {
	base := strings.TrimSuffix(w.cfg.Path, filepath.Ext(w.cfg.Path))
	files, _ := filepath.Glob(base + "-" + w.cfg.Replica + "-*.jsonl")
	slices.Sort(files)
	return files
}

// prune removes the oldest rotated files beyond Keep, when nothing
// ships them (a shipper removes each once it is verified in S3).
func (w *Writer) prune() {
	if w.deps.Rotated != nil {
		return
	}
	files := w.rotatedFiles()
	for len(files) > w.cfg.Keep {
		os.Remove(files[0])
		files = files[1:]
	}
}
