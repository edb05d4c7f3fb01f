package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// workers run loads on goroutines that outlive them. An origin fetch
// through the AWS SDK runs a deep middleware stack: on a fresh goroutine
// (8 KiB of stack, which singleflight starts per flight) the stack was
// copied as it grew, several times per miss, a measurable share of a
// miss's CPU (bench/results/history-to-2026-12-02.md). A worker's stack grows once and stays
// grown.
type workers struct {
	// jobs hands a job to an idle worker; unbuffered, so a send succeeds
	// only when one is waiting.
	jobs chan func()
	// idle is how long a worker waits for another job before it exits,
	// so the pool shrinks back after a burst of misses.
	idle time.Duration
	wg   sync.WaitGroup
	// started and waiting count workers started and workers waiting for a
	// job, for tests.
	started, waiting atomic.Int64
}

func newWorkers(idle time.Duration) *workers {
	return &workers{jobs: make(chan func()), idle: idle}
}

// run runs job on an idle worker, or on a new one when none is idle.
func (w *workers) run(job func()) {
	select {
	case w.jobs <- job:
	default:
		w.started.Add(1)
		w.wg.Go(func() { w.loop(job) })
	}
}

func (w *workers) loop(job func()) {
	t := time.NewTimer(w.idle)
	defer t.Stop()
	for {
		job()
		t.Reset(w.idle)
		w.waiting.Add(1)
		select {
		case job = <-w.jobs:
			w.waiting.Add(-1)
		case <-t.C:
			w.waiting.Add(-1)
			return
		}
	}
}
