package proxy

import (
	"context"
	"time"

	"github.com/tileproxy/tileproxy/config"
)

// Readiness says what /readyz waits for before it answers 200.
type Readiness struct {
	// Probe checks one tileset's origin; nil probes nothing.
	Probe func(ctx context.Context, t *config.Tileset) error
	// ProbeTimeout bounds one probe.
	ProbeTimeout time.Duration
	// AuthReady reports whether the token keys are loaded (a JWKS fetched
	// once); nil means they always are.
	AuthReady func() bool
	// Warmed reports whether the cache warm at start (cache.warm) is
	// over; nil means there is none.
	Warmed func() bool
	// Grace is how long to wait before reporting ready anyway, with a
	// warning naming what still fails (readiness_grace).
	Grace time.Duration
	// Now is the clock for Grace; time.Now when nil.
	Now func() time.Time
}

// AwaitReady probes every tileset's origin until each has answered once
// and waits for the token keys and the cache warm, or until r.Grace has
// passed, then marks
// the proxy ready. It returns then, or when ctx ends; run it in its own
// goroutine.
func (p *Proxy) AwaitReady(ctx context.Context, r Readiness) {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	authReady := r.AuthReady
	if authReady == nil {
		authReady = func() bool { return true }
	}
	warmed := r.Warmed
	if warmed == nil {
		warmed = func() bool { return true }
	}
	pending := map[string]*config.Tileset{}
	if r.Probe != nil {
		for i := range p.cfg.Tilesets {
			pending[p.cfg.Tilesets[i].Name] = &p.cfg.Tilesets[i]
		}
	}
	deadline := now().Add(r.Grace)
	lastErr := map[string]error{}
	// Every tileset is probed at least once, even with no grace at all.
	for {
		for name, t := range pending {
			pctx, cancel := context.WithTimeout(ctx, r.ProbeTimeout)
			err := r.Probe(pctx, t)
			cancel()
			if err == nil {
				delete(pending, name)
				continue
			}
			lastErr[name] = err
		}
		if (len(pending) == 0 && authReady() && warmed()) || !now().Before(deadline) {
			break
		}
		// Token keys come in the background; look again soon.
		wait := time.Second
		if len(pending) == 0 {
			wait = 50 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	for name := range pending {
		p.log.Warn("readiness grace passed with the origin still failing for a tileset", "tileset", name, "err", lastErr[name])
	}
	if !authReady() {
		p.log.Warn("readiness grace passed without the JWKS: tokens signed by its keys are refused until it answers")
	}
	if !warmed() {
		p.log.Warn("readiness grace passed while the cache warm goes on: tiles it has not fetched yet go to the origin")
	}
	p.SetReady(true)
	p.log.Info("ready")
}
