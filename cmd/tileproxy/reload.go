package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/tileproxy/tileproxy/internal/certs"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/proxy"
)

// generation is what one configuration builds: its proxy, with the
// verifier and origin behind it, and what its readiness waits for.
type generation struct {
	cfg       *config.Config
	proxy     *proxy.Proxy
	readiness proxy.Readiness
	authReady func() bool
	// cancel stops the generation's background work (JWKS refreshes).
	cancel context.CancelFunc
	// stopWarm, when set, stops the cache warm the generation runs.
	stopWarm context.CancelCauseFunc
}

// reloadKeyWait bounds how long a reload waits for a new JWKS to answer
// before it gives up and keeps the configuration in force.
const reloadKeyWait = 10 * time.Second

// reloadOnHangup re-reads the configuration file on every SIGHUP until
// ctx ends. SIGHUP no longer ends the process (Go's default, which skips
// the drain).
func (a *app) reloadOnHangup(ctx context.Context, path string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			a.log.Info("SIGHUP received: reloading the configuration", "file", path)
			a.reload(path)
			for _, c := range []*certs.Reloader{a.certs, a.metricsCerts} {
				if c != nil {
					c.Reload() // a broken pair is logged and the one in force stays
				}
			}
		}
	}
}

// configLoaded records the file in force at start in config_info.
func (a *app) configLoaded(path string) {
	if data, err := os.ReadFile(path); err == nil {
		a.metrics.ConfigInfo(fileHash(data))
	}
}

func fileHash(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:6])
}

// reload reads path and, when it holds a valid configuration, switches
// to it; otherwise it logs every problem, as check would, and keeps
// serving the configuration in force.
func (a *app) reload(path string) error {
	data, err := os.ReadFile(path)
	var cfg *config.Config
	if err == nil {
		cfg, err = config.Parse(data, os.LookupEnv)
	}
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil {
		err = a.apply(cfg)
	}
	if err != nil {
		for _, problem := range strings.Split(err.Error(), "\n") {
			a.log.Error("configuration reload refused; still serving the previous configuration", "file", path, "problem", problem)
		}
		a.metrics.ConfigReload(false)
		return err
	}
	a.metrics.ConfigReload(true)
	a.metrics.ConfigInfo(fileHash(data))
	a.log.Info("configuration reloaded", "file", path, "sha256", fileHash(data), "tilesets", len(cfg.Tilesets))
	return nil
}

// apply switches to cfg, which is valid: it builds cfg's verifier, origin
// and proxy over the same cache and metrics, waits for a new JWKS to
// answer, swaps the proxy in one step (requests in flight finish on the
// old one), and drops the cached tiles of tilesets that are gone.
func (a *app) apply(cfg *config.Config) error {
	if a.build == nil {
		return errors.New("this server cannot reload its configuration")
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.draining.Load() {
		return errors.New("shutting down")
	}
	old := a.gen
	for _, f := range needsRestart(old.cfg, cfg) {
		a.log.Warn("configuration change needs a restart to take effect; the running value stays", "field", f)
	}
	g, err := a.build(a.ctx, cfg)
	if err != nil {
		return err
	}
	for i := 0; !g.authReady(); i++ {
		if time.Duration(i)*50*time.Millisecond >= reloadKeyWait {
			g.cancel()
			return fmt.Errorf("auth.jwks_url: no keys within %v", reloadKeyWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The new numbers for what outlives a configuration; what is held
	// stays held.
	if a.principals != nil {
		if err := a.principals.Configure(cfg.Limits); err != nil {
			g.cancel()
			return fmt.Errorf("limits: %w", err)
		}
	}
	if a.slots != nil {
		a.slots.SetLimit(cfg.S3.MaxInFlight)
	}
	if a.controls != nil {
		if err := a.controls.configure(cfg); err != nil {
			g.cancel()
			return err
		}
	}
	g.proxy.SetReady(true)
	a.current.Store(g.proxy)
	a.gen = g
	if old.stopWarm != nil {
		old.stopWarm(errReloaded)
	}
	if a.cache != nil {
		gone := goneTilesets(old.proxy.Core().KeyPrefixes(), g.proxy.Core().KeyPrefixes())
		if n := a.cache.RemoveIf(func(key string) bool {
			return slices.ContainsFunc(gone, func(p string) bool { return strings.HasPrefix(key, p) })
		}); n > 0 {
			a.log.Info("dropped the cached tiles of removed tilesets", "entries", n)
		}
	}
	// The old generation's requests in flight may still use its verifier;
	// its background refreshes stop once they have had time to finish.
	time.AfterFunc(old.cfg.ShutdownTimeout.Duration(), old.cancel)
	return nil
}

// goneTilesets returns the cache-key prefixes (core.KeyPrefix) that old
// read and cur reads no more.
func goneTilesets(old, cur []string) []string {
	var gone []string
	for _, p := range old {
		if !slices.Contains(cur, p) {
			gone = append(gone, p)
		}
	}
	return gone
}

// needsRestart names the settings a reload cannot change: the listeners,
// logging, the cache (built once at start), its warm (which runs once,
// at start) and the limits store (whose counts the process holds).
func needsRestart(old, cfg *config.Config) []string {
	var fields []string
	for _, f := range []struct {
		name    string
		changed bool
	}{
		{"listen", old.Listen != cfg.Listen},
		{"metrics_listen", old.MetricsListen != cfg.MetricsListen},
		{"log", old.Log != cfg.Log},
		{"cache", !cacheEqual(old.Cache, cfg.Cache)},
		{"cache.warm", !reflect.DeepEqual(old.Cache.Warm, cfg.Cache.Warm)},
		{"limits.store", old.Limits.Store != cfg.Limits.Store},
		{"tls", old.TLS != cfg.TLS},
		{"metrics_tls", old.MetricsTLS != cfg.MetricsTLS},
		{"h2c", old.H2C != cfg.H2C},
		{"http2", old.HTTP2 != cfg.HTTP2},
		{"audit", !reflect.DeepEqual(old.Audit, cfg.Audit)},
	} {
		if f.changed {
			fields = append(fields, f.name)
		}
	}
	return fields
}

// cacheEqual compares the cache settings but the warm, which needsRestart
// names on its own.
func cacheEqual(a, b config.Cache) bool {
	a.Warm, b.Warm = config.Warm{}, config.Warm{}
	return reflect.DeepEqual(a, b)
}
