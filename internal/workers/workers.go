// Package workers runs jobs on goroutines that outlive them, so that a
// job's stack grows once and stays grown. A fresh goroutine starts with a
// small stack, and a deep call path (the AWS SDK's middleware on a miss,
// the whole hit path on an HTTP/2 stream, which net/http serves on a new
// goroutine every time) copies it several times as it grows: measured, a
// large share of the CPU of such a job (bench/README.md).
package workers

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool hands jobs to idle workers, starting one when none is idle and
// fewer than max are running (beyond that a job runs on the caller's
// goroutine). A worker waits idle for the next job, then exits, so the
// pool shrinks back after a burst.
type Pool struct {
	// jobs hands a job to an idle worker; unbuffered, so a send succeeds
	// only when one is waiting.
	jobs chan func()
	idle time.Duration
	max  int64
	wg   sync.WaitGroup
	// started, running and waiting count workers started, alive and
	// waiting for a job.
	started, running, waiting atomic.Int64
	// dones recycles Do's result channels.
	dones sync.Pool
}

// New returns a pool whose workers wait idle for a job at most idle; max
// bounds the workers alive (0: no bound).
func New(idle time.Duration, max int) *Pool {
	return &Pool{jobs: make(chan func()), idle: idle, max: int64(max),
		dones: sync.Pool{New: func() any { return make(chan any, 1) }}}
}

// Run runs job on an idle worker, or on a new one when none is idle; at
// the bound, on the caller's goroutine. It does not wait unless it runs
// job itself.
func (p *Pool) Run(job func()) {
	select {
	case p.jobs <- job:
		return
	default:
	}
	if p.max > 0 && p.running.Add(1) > p.max {
		p.running.Add(-1)
		job()
		return
	} else if p.max == 0 {
		p.running.Add(1)
	}
	p.started.Add(1)
	p.wg.Go(func() { p.loop(job) })
}

// Do runs job on a worker, as Run does, and returns once it has
// returned. A panic in job is raised again on the caller's goroutine, so
// whoever recovers there (net/http's server) sees it as its own.
func (p *Pool) Do(job func()) {
	done := p.dones.Get().(chan any)
	p.Run(func() {
		defer func() { done <- recover() }()
		job()
	})
	v := <-done
	p.dones.Put(done)
	if v != nil {
		panic(v)
	}
}

func (p *Pool) loop(job func()) {
	defer p.running.Add(-1)
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		job()
		t.Reset(p.idle)
		p.waiting.Add(1)
		select {
		case job = <-p.jobs:
			p.waiting.Add(-1)
		case <-t.C:
			p.waiting.Add(-1)
			return
		}
	}
}

// Wait waits for every worker to exit (each does once idle for its idle
// time).
func (p *Pool) Wait() { p.wg.Wait() }

// Started is how many workers were started; Waiting, how many wait for a
// job now.
func (p *Pool) Started() int64 { return p.started.Load() }

// Waiting is how many workers wait idle for a job.
func (p *Pool) Waiting() int64 { return p.waiting.Load() }
