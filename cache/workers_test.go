package cache

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkers: a job goes to a waiting worker when there is one (no new
// goroutine, so no stack to grow again), to a new worker when all are
// busy, and idle workers leave after their idle time.
func TestWorkers(t *testing.T) {
	w := newWorkers(time.Hour)
	// waitIdle waits for n workers to be on their way to wait for a job.
	// One may not be parked in its select yet when the next job comes,
	// and then the job starts another (harmless, and it cannot be told
	// apart from outside); the counts below allow for that.
	waitIdle := func(n int64) {
		t.Helper()
		for i := 0; w.waiting.Load() < n; i++ {
			if i > 5000 {
				t.Fatalf("%d workers waiting, want %d", w.waiting.Load(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var ran atomic.Int64
	for range 50 {
		done := make(chan struct{})
		w.run(func() { ran.Add(1); close(done) })
		<-done
		waitIdle(1)
	}
	if ran.Load() != 50 || w.started.Load() > 10 {
		t.Fatalf("50 jobs one after another: %d ran on %d workers, want them reused", ran.Load(), w.started.Load())
	}
	// Four at once, each blocked until all have started: at least four
	// workers exist.
	before := w.started.Load()
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		w.run(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	if w.started.Load() < 4 || w.started.Load() > before+4 {
		t.Fatalf("four blocking jobs at once: %d workers started (%d before)", w.started.Load(), before)
	}
	waitIdle(4)

	short := newWorkers(time.Millisecond)
	short.run(func() {})
	short.wg.Wait() // returns only once the worker has left
	if short.started.Load() != 1 || short.waiting.Load() != 0 {
		t.Fatalf("idle worker: started %d, waiting %d", short.started.Load(), short.waiting.Load())
	}
}
