package logbuf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records what reaches the underlying writer, write by write.
type sink struct {
	mu     sync.Mutex
	writes []string
	err    error
}

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes = append(s.writes, string(p))
	return len(p), s.err
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.writes, "")
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

// never is an interval no test outlives, so only size, Warn and Close
// can be what wrote.
const never = time.Hour

func TestBatchesUntilFlush(t *testing.T) {
	var s sink
	w, err := New(Config{Size: 1024, Interval: never}, &s)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 10 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	if s.count() != 0 {
		t.Fatalf("%d writes before any flush; want them batched", s.count())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if s.count() != 1 || strings.Count(s.String(), "\n") != 10 {
		t.Fatalf("after Flush: %d writes holding %q; want 1 write of 10 lines", s.count(), s.String())
	}
}

func TestSizeFlushesInOrder(t *testing.T) {
	var s sink
	w, _ := New(Config{Size: 64, Interval: never}, &s)
	defer w.Close()
	var want strings.Builder
	for i := range 20 {
		line := fmt.Sprintf("line %02d\n", i) // 8 bytes: 8 fit in a batch
		if i == 13 {
			line = strings.Repeat("x", 100) + "\n" // larger than a batch
		}
		want.WriteString(line)
		w.Write([]byte(line))
	}
	w.Flush()
	if s.String() != want.String() {
		t.Fatalf("order lost:\n got %q\nwant %q", s.String(), want.String())
	}
	for _, wr := range s.writes {
		if len(wr) > 64 && !strings.HasPrefix(wr, "xxx") {
			t.Fatalf("a batch of %d bytes exceeds Size", len(wr))
		}
	}
}

func TestIntervalFlushes(t *testing.T) {
	var s sink
	w, _ := New(Config{Size: 1024, Interval: 10 * time.Millisecond}, &s)
	defer w.Close()
	w.Write([]byte("waiting\n"))
	// No deadline is asserted: the line must arrive without any further
	// call, however slow the machine. The wait is bounded by a count of
	// 1000 intervals, so a flusher that never runs fails instead of hanging.
	for i := 0; s.count() == 0; i++ {
		if i == 1000 {
			t.Fatal("the line was never flushed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s.String() != "waiting\n" {
		t.Fatalf("got %q", s.String())
	}
}

func TestWarnFlushesAtOnce(t *testing.T) {
	var s sink
	w, _ := New(Config{Size: 1 << 20, Interval: never}, &s)
	defer w.Close()
	log := slog.New(Handler(slog.NewTextHandler(w, nil), w)).With("app", "t")
	log.Info("first")
	log.Debug("dropped") // below the text handler's level
	if s.count() != 0 {
		t.Fatal("an Info record was written at once; want it batched")
	}
	log.WithGroup("g").Warn("second", "k", 1)
	out := s.String()
	if !strings.Contains(out, "msg=first app=t") || !strings.Contains(out, "msg=second app=t g.k=1") ||
		strings.Index(out, "first") > strings.Index(out, "second") {
		t.Fatalf("after Warn the sink holds %q; want first then second", out)
	}
	if !log.Enabled(context.Background(), slog.LevelInfo) || log.Enabled(context.Background(), slog.LevelDebug) {
		t.Fatal("the wrapper changed the level")
	}
}

func TestCloseFlushesAndPassesLaterWrites(t *testing.T) {
	var s sink
	w, _ := New(Config{Size: 1024, Interval: never}, &s)
	w.Write([]byte("before\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if s.String() != "before\n" {
		t.Fatalf("Close left %q", s.String())
	}
	w.Write([]byte("after\n"))
	if s.String() != "before\nafter\n" {
		t.Fatalf("a write after Close was held: %q", s.String())
	}
	if err := w.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
}

func TestWriteErrorReported(t *testing.T) {
	s := sink{err: errors.New("disk full")}
	w, _ := New(Config{Size: 1024, Interval: never}, &s)
	w.Write([]byte("x\n"))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close: %v; want the write error", err)
	}
}

func TestConcurrentWritesStayWhole(t *testing.T) {
	var s sink
	w, _ := New(Config{Size: 256, Interval: time.Millisecond}, &s)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				fmt.Fprintf(w, "g%d line %d %s\n", g, i, strings.Repeat("p", i%50))
			}
		}()
	}
	wg.Wait()
	w.Close()
	lines := strings.Split(strings.TrimSuffix(s.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines; want 1600", len(lines))
	}
	for _, l := range lines {
		var g, i int
		var pad string
		if n, _ := fmt.Sscanf(l, "g%d line %d %s", &g, &i, &pad); n < 2 || (i%50 != 0 && len(pad) != i%50) {
			t.Fatalf("torn line %q", l)
		}
	}
}

func TestValidate(t *testing.T) {
	for field, cfg := range map[string]Config{"Size": {Size: -1}, "Interval": {Interval: -time.Second}} {
		if _, err := New(cfg, &sink{}); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("negative %s: %v; want an error naming the field", field, err)
		}
	}
	w, err := New(Config{}, &sink{})
	if err != nil || w.cfg.Size != DefaultSize || w.cfg.Interval != DefaultInterval {
		t.Fatalf("zero Config: %v, %+v; want the defaults", err, w.cfg)
	}
	w.Close()
}
