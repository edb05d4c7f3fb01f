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
// SIGBUS at a write) and mapped shared, one segment at a time: a line is
// in the page cache once copied, before its answer is sent, and a crash
// of the process loses none. The next segment is mapped and its pages
// faulted in ahead, by a goroutine of its own, so that no request pays a
// page fault. Lines never hold a NUL, so the used part of a file ends at
// its first NUL byte; a segment's unused tail is newlines.
type Writer struct {
	cfg  Config
	deps Deps

	mu     sync.Mutex
	f      *os.File
	size   int64  // the active file's allocated size: whole segments
	segLen int    // a segment's size: segSize, or max_bytes when smaller
	seg    []byte // the segment being written; nil after a failed rotation
	segOff int64  // its offset in the file
	off    int    // the write offset in seg
	next   chan segment
	first  time.Time // of the first line in the active file
	last   time.Time
	err    error // the last disk error, until a rotation succeeds
	// idPrefix starts every line's id: random per process, so ids of
	// several processes (and restarts) never collide.
	idPrefix string
	head     string // lineHead
	times    timeText
	seq      atomic.Uint64
}

// segSize is one mapped segment of the active file.
const segSize = 4 << 20

// segment is a mapped, faulted-in segment of the active file.
type segment struct {
	b   []byte
	off int64
	err error
}

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14): fault the pages
// in, writable, now.
const madvPopulateWrite = 23

// prepare maps the segment at off of f and faults its pages in, then
// hands it to next.
func prepare(f *os.File, off int64, n int, next chan<- segment) {
	b, err := syscall.Mmap(int(f.Fd()), off, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err == nil && syscall.Madvise(b, madvPopulateWrite) != nil {
		for i := 0; i < len(b); i += os.Getpagesize() {
			b[i] = 0 // older kernels: touch each page (it is zero already)
		}
	}
	next <- segment{b: b, off: off, err: err}
}

// Next is the sequence number of the next request.
func (w *Writer) Next() uint64 { return w.seq.Add(1) }

// Open recovers what a crash left at cfg.Path (its used part becomes a
// rotated file, handed to Rotated) and starts a new active file.
func Open(cfg Config, deps Deps) (*Writer, error) {
	w := &Writer{cfg: cfg, deps: deps}
	var id [6]byte
	rand.Read(id[:])
	w.idPrefix = hex.EncodeToString(id[:])
	w.head = lineHead(cfg.Replica, w.idPrefix)
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
	err := w.write(l)
	if err != nil {
		w.deps.Metrics.AuditLine("error")
		return err
	}
	w.deps.Metrics.AuditLine("written")
	return nil
}

// write builds l's line in place in the mapping: no buffer, no copy. A
// line that does not fit what is left of the segment is built again in
// the next.
func (w *Writer) write(l *Line) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for try := 0; ; try++ {
		if w.seg == nil {
			if err := w.nextSegment(); err != nil {
				return err
			}
		}
		room := w.seg[w.off:w.off:len(w.seg)]
		b := appendLine(room, l, w.head, &w.times, w.cfg.Clear)
		if len(b) <= cap(room) && (len(b) == 0 || &b[0] == &w.seg[w.off]) {
			w.off += len(b)
			if w.first.IsZero() {
				w.first = l.Time
			}
			w.last = l.Time
			return nil
		}
		// append moved the line elsewhere: it does not fit here.
		if try > 0 && w.off == 0 {
			return ErrFull // not even in an empty segment
		}
		if err := w.nextSegment(); err != nil {
			return err
		}
	}
}

// nextSegment moves to the next segment (prepared ahead), or rotates
// when the file is full.
func (w *Writer) nextSegment() error {
	if w.seg == nil || w.segOff+int64(w.segLen) >= w.size {
		if w.seg != nil && w.off == 0 {
			return ErrFull // a fresh file's first segment: the line cannot fit anywhere
		}
		return w.rotateLocked()
	}
	for i := w.off; i < len(w.seg); i++ {
		w.seg[i] = '\n' // the unused tail: empty lines, never a NUL
	}
	s := <-w.next
	if s.err != nil {
		w.next <- s // closeActive drains it
		return w.fail(s.err)
	}
	syscall.Munmap(w.seg)
	w.seg, w.segOff, w.off = s.b, s.off, 0
	if w.segOff+int64(w.segLen) < w.size {
		go prepare(w.f, w.segOff+int64(w.segLen), w.segLen, w.next)
	}
	return nil
}

// used is how much of the active file holds lines.
func (w *Writer) used() int64 { return w.segOff + int64(w.off) }

// Path is the active file's path.
func (w *Writer) Path() string { return w.cfg.Path }

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
	if w.seg != nil {
		errs = append(errs, syscall.Munmap(w.seg))
		w.seg = nil
	}
	if w.next != nil && w.segOff+int64(w.segLen) < w.size {
		// The next segment is being prepared (or failed): take it back.
		if s := <-w.next; s.err == nil {
			syscall.Munmap(s.b)
		}
	}
	errs = append(errs, w.f.Truncate(w.used()), w.f.Close())
	w.f = nil
	return errors.Join(errs...)
}

// rotateLocked closes the active file, names it by replica and time span,
// and opens a new one.
func (w *Writer) rotateLocked() error {
	var rotated string
	if w.f != nil && w.used() > 0 {
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

// openActive creates the active file, allocated whole, maps its first
// segment and prepares the second.
func (w *Writer) openActive() error {
	f, err := os.OpenFile(w.cfg.Path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("audit.path: %w", err)
	}
	// Whole segments, never past max_bytes: a file rotates at or
	// before it.
	seg := int64(min(segSize, w.cfg.MaxBytes))
	seg -= seg % int64(os.Getpagesize())
	seg = max(seg, int64(os.Getpagesize()))
	size := max(seg, w.cfg.MaxBytes/seg*seg)
	if err := allocate(f, size); err != nil {
		f.Close()
		os.Remove(w.cfg.Path)
		return fmt.Errorf("audit.path: allocating %d bytes: %w", size, err)
	}
	next := make(chan segment, 1)
	prepare(f, 0, int(seg), next)
	s := <-next
	if s.err != nil {
		f.Close()
		return fmt.Errorf("audit.path: mmap: %w", s.err)
	}
	w.f, w.size, w.segLen, w.seg, w.segOff, w.off, w.next, w.first, w.last = f, size, int(seg), s.b, 0, 0, next, time.Time{}, time.Time{}
	if seg < size {
		go prepare(f, seg, int(seg), next)
	}
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
