package workers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitIdle waits for n workers of p to be on their way to wait for a job.
// One may not be parked in its select yet when the next job comes, and
// then the job starts another (harmless, and it cannot be told apart from
// outside); the counts below allow for that.
func waitIdle(t *testing.T, p *Pool, n int64) {
	t.Helper()
	for i := 0; p.Waiting() < n; i++ {
		if i > 5000 {
			t.Fatalf("%d workers waiting, want %d", p.Waiting(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkers: a job goes to a waiting worker when there is one (no new
// goroutine, so no stack to grow again), to a new worker when all are
// busy, and idle workers leave after their idle time.
func TestWorkers(t *testing.T) {
	w := New(time.Hour, 0)
	var ran atomic.Int64
	for range 50 {
		done := make(chan struct{})
		w.Run(func() { ran.Add(1); close(done) })
		<-done
		waitIdle(t, w, 1)
	}
	if ran.Load() != 50 || w.Started() > 10 {
		t.Fatalf("50 jobs one after another: %d ran on %d workers, want them reused", ran.Load(), w.Started())
	}
	// Four at once, each blocked until all have started: at least four
	// workers exist.
	before := w.Started()
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		w.Run(func() { defer wg.Done(); <-release })
	}
	close(release)
	wg.Wait()
	if w.Started() < 4 || w.Started() > before+4 {
		t.Fatalf("four blocking jobs at once: %d workers started (%d before)", w.Started(), before)
	}
	waitIdle(t, w, 4)

	short := New(time.Millisecond, 0)
	short.Run(func() {})
	short.Wait() // returns only once the worker has left
	if short.Started() != 1 || short.Waiting() != 0 {
		t.Fatalf("idle worker: started %d, waiting %d", short.Started(), short.Waiting())
	}
}

// TestBound: with max workers busy, a further job runs on the caller's
// goroutine rather than starting another.
func TestBound(t *testing.T) {
	p := New(time.Hour, 2)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		p.Run(func() { defer wg.Done(); <-release })
	}
	inline := false
	p.Run(func() { inline = true }) // no worker free, none may start: runs here
	if !inline || p.Started() != 2 {
		t.Errorf("at the bound: ran inline %v, %d workers started, want 2", inline, p.Started())
	}
	close(release)
	wg.Wait()
}

// TestDoWaitsAndPanicsHere: Do returns after the job, and a job's panic
// comes out of Do on the caller's goroutine (where net/http recovers it),
// leaving the worker to serve on.
func TestDoWaitsAndPanicsHere(t *testing.T) {
	p := New(time.Hour, 0)
	n := 0
	p.Do(func() { n++ })
	if n != 1 {
		t.Fatalf("Do returned before its job ran (%d)", n)
	}
	func() {
		defer func() {
			if v := recover(); v != "boom" {
				t.Errorf("recovered %v, want the job's panic", v)
			}
		}()
		p.Do(func() { panic("boom") })
		t.Error("Do returned after its job panicked")
	}()
	waitIdle(t, p, 1)
	p.Do(func() { n++ })
	if n != 2 || p.Started() != 1 {
		t.Errorf("after a panic: %d jobs ran on %d workers, want 2 on 1", n, p.Started())
	}
}
