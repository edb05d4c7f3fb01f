// Command tileproxy is an authenticating reverse proxy for private map
// tiles in S3. This package only parses flags and wires the packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tileproxy/tileproxy/area"
	"github.com/tileproxy/tileproxy/audit"
	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/certs"
	"github.com/tileproxy/tileproxy/internal/coalesce"
	"github.com/tileproxy/tileproxy/internal/h2c"
	"github.com/tileproxy/tileproxy/internal/logging"
	"github.com/tileproxy/tileproxy/internal/memlimit"
	"github.com/tileproxy/tileproxy/internal/workers"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
	"github.com/tileproxy/tileproxy/proxy/core"
	"github.com/tileproxy/tileproxy/revoke"
	"github.com/tileproxy/tileproxy/warm"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `tileproxy: an authenticating proxy for private map tiles in S3

usage:
  tileproxy [serve] -config tileproxy.yaml   run the server
  tileproxy demo [-listen 127.0.0.1:8080] [-tls]
                                             zero-setup demo with a map viewer (-tls: https, HTTP/2)
  tileproxy token -secret-env VAR -tilesets a,b -ttl 1h
                                             mint a development HS256 token
  tileproxy token -key idp.pem -kid k1 -iss URL -aud tileproxy -claim 'scope=tiles:a'
                                             mint one as an issuer would, for auth.issuers rules
  tileproxy check -config tileproxy.yaml     validate a config
  tileproxy revoke -config F (-sub S [-iss I] | -jti J) [-ttl D]
                                             revoke tokens on every replica (limits.store)
  tileproxy audit -dir D (-principal P | -tile TS/Z/X/Y | -tileset TS) [-since T] [-until T]
                                             who saw a tile, what a principal saw (audit files)
  tileproxy version                          print version information
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serveCmd(args, stderr)
	case "demo":
		err = demoCmd(args, stdout, stderr)
	case "token":
		err = tokenCmd(args, stdout, stderr)
	case "check":
		return checkCmd(args, stdout, stderr)
	case "revoke":
		err = revokeCmd(args, stdout, stderr)
	case "audit":
		err = auditCmd(args, stdout, stderr)
	case "version":
		b := buildInfo()
		fmt.Fprintf(stdout, "tileproxy %s (revision %s, %s)\n", b.Version, b.Revision, b.GoVersion)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "tileproxy: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "tileproxy:", err)
		return 1
	}
	return 0
}

func buildInfo() metrics.Build {
	b := metrics.Build{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				b.Revision = s.Value
			}
		}
		if b.Version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
	}
	return b
}

func serveCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "tileproxy.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadValid(*path)
	if err != nil {
		return err
	}
	logs := logging.New(cfg.Log, stderr)
	defer logs.Close()
	log := logs.Log
	lim, gcPct := memlimit.Set(int64(cfg.Cache.MaxBytes))
	if lim != nil {
		attrs := []any{"limit_mib", lim.Base >> 20}
		if gcPct > 0 {
			attrs = append(attrs, "gc_percent", gcPct)
		}
		log.Info("soft memory limit set from cache.max_bytes (override with GOMEMLIMIT, GOGC)", attrs...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app, err := newApp(ctx, cfg, logs, origin.Deps{Logger: log}, lim)
	if err != nil {
		return err
	}
	app.configLoaded(*path)
	go app.reloadOnHangup(ctx, *path)
	return app.run(ctx, nil)
}

// app is a wired server: the proxy, its registry and its settings.
type app struct {
	cfg      *config.Config
	log      *slog.Logger
	proxy    *proxy.Proxy // the proxy it started with; current serves
	registry *prometheus.Registry
	// current is the proxy requests go to; a reload swaps it.
	current atomic.Pointer[proxy.Proxy]
	// reload state, set by newApp (nil in tests that build an app by hand,
	// which then cannot reload).
	ctx      context.Context
	metrics  *metrics.Metrics
	cache    *cache.Cache
	build    func(ctx context.Context, cfg *config.Config) (*generation, error)
	gen      *generation // the configuration in force
	reloadMu sync.Mutex  // one reload at a time
	draining atomic.Bool // set on shutdown: no reload after it
	// readiness is what /readyz waits for; the zero value waits for
	// nothing.
	readiness proxy.Readiness
	// metricsAddr is the metrics listener's address once run has bound it.
	metricsAddr string
	// limits are the main server's connection limits.
	limits serverLimits
	// slots and principals are s3.max_in_flight and the per-principal
	// limits, shared by every configuration in turn (nil in tests that
	// build an app by hand).
	slots      *origin.Slots
	principals *core.Limits
	// controls are the quotas, sweep detection and revocations (nil in
	// tests that build an app by hand).
	controls *controls
	// audit is the audit trail (nil when off); it outlives a
	// configuration (audit changes need a restart). stopShip stops its
	// shipper: files not shipped yet ship at the next start.
	audit    *audit.Writer
	stopShip func()
	// certs and metricsCerts hold the listeners' TLS pairs (nil without
	// tls, metrics_tls); files that change are read again, and on SIGHUP.
	certs, metricsCerts *certs.Reloader
}

// serverLimits bound what one connection may hold: slow headers
// (slowloris), slow bodies, idle keep-alives and header size.
type serverLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
}

var defaultLimits = serverLimits{
	readHeader: 10 * time.Second,
	read:       30 * time.Second,
	// Generous: a large object streams through; slower readers are cut.
	write:          5 * time.Minute,
	idle:           2 * time.Minute,
	maxHeaderBytes: 32 << 10,
}

// lim, when not nil, is the memory limit to keep beside the cache's file.
// The registry, metrics and cache live as long as the app; the verifier,
// origin and proxy are one configuration's (see build), so a reload can
// replace them.
func newApp(ctx context.Context, cfg *config.Config, logs *logging.Logs, originDeps origin.Deps, lim *memlimit.Limit) (*app, error) {
	log := logs.Log
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, buildInfo())
	if err != nil {
		return nil, err
	}
	originDeps.OnAssumeRole = m.AssumeRole
	// The cache settings are read once, here: the cache (or, with the
	// cache off, the core of every configuration) keeps them, and a
	// reload that changes them says they need a restart. A shared fetch
	// runs detached from its requests, so it gets its own bound: time to
	// headers plus time to read a whole body.
	cacheCfg := cache.FromConfig(cfg.Cache, 2*cfg.S3.Timeout.Duration()+cfg.S3.ConnectTimeout.Duration())
	// Origin slots and per-principal limits outlive a configuration too,
	// so that a reload cannot hand anyone a second allowance.
	slots := origin.NewSlots(cfg.S3.MaxInFlight)
	limits, err := core.NewLimits(cfg.Limits, time.Now)
	if err != nil {
		return nil, err
	}
	// max_bytes: 0 turns the cache off: every request streams from S3.
	var c *cache.Cache
	if cfg.Cache.MaxBytes > 0 {
		c, err = cache.New(cacheCfg, cache.Deps{
			OnChange: func(bytes, objects int64) {
				m.CacheBytes.Set(float64(bytes))
				m.CacheObjects.Set(float64(objects))
				lim.Follow(c.OffHeapBytes())
			},
			OnEvict: m.CacheEvictions.Inc,
		})
		if err != nil {
			return nil, err
		}
		if !c.FileBacked() {
			log.Info("cache keeps every body on the heap: this system has no memory files (memfd), so hits copy bodies instead of sending them with sendfile")
		}
	}
	ctl, err := newControls(ctx, cfg, m, log)
	if err != nil {
		return nil, err
	}
	aw, stopShip, err := openAudit(ctx, cfg, originDeps, m, log)
	if err != nil {
		ctl.close()
		return nil, err
	}
	var pairs [2]*certs.Reloader
	for i, t := range []config.TLS{cfg.TLS, cfg.MetricsTLS} {
		if !t.On() {
			continue
		}
		if pairs[i], err = certs.New(cfg.TLSPath(t.CertFile), cfg.TLSPath(t.KeyFile), log); err != nil {
			ctl.close()
			stopShip()
			return nil, fmt.Errorf("%s: %w", []string{"tls", "metrics_tls"}[i], err)
		}
		go pairs[i].Run(ctx)
	}
	a := &app{cfg: cfg, log: log, registry: reg, metrics: m, cache: c, limits: defaultLimits, slots: slots, principals: limits, controls: ctl, audit: aw, stopShip: stopShip,
		certs: pairs[0], metricsCerts: pairs[1]}
	a.build = func(ctx context.Context, cfg *config.Config) (*generation, error) {
		// Areas are read with the rest of the configuration, so a reload
		// reloads them; a broken one refuses the configuration.
		areas, err := loadAreas(cfg)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(ctx)
		v, err := auth.New(ctx, cfg.Auth, auth.Deps{Logger: log, OnJWKSRefresh: m.JWKSRefresh, Areas: areas, Revoked: ctl.revoked.Revoked,
			Tilesets: func(name string) bool { _, ok := cfg.Tileset(name); return ok }})
		if err != nil {
			cancel()
			return nil, err
		}
		o, err := origin.New(ctx, cfg, originDeps)
		if err != nil {
			cancel()
			return nil, err
		}
		p, err := proxy.New(cfg, proxy.Deps{Verifier: v, Fetcher: o, Cache: c, CacheConfig: cacheCfg, Slots: slots, Limits: limits,
			Exfil: ctl.limiter, Audit: aw, Metrics: m, Logger: log, AccessLog: logs.Access})
		if err != nil {
			cancel()
			return nil, err
		}
		return &generation{cfg: cfg, proxy: p, authReady: v.Ready, cancel: cancel, readiness: proxy.Readiness{
			Probe:        func(ctx context.Context, t *config.Tileset) error { return o.Probe(ctx, t.Name, t.Bucket, t.Prefix) },
			ProbeTimeout: cfg.S3.Timeout.Duration(),
			AuthReady:    v.Ready,
			Grace:        cfg.ReadinessGrace.Duration(),
		}}, nil
	}
	g, err := a.build(ctx, cfg)
	if err != nil {
		return nil, err
	}
	a.proxy, a.readiness, a.gen = g.proxy, g.readiness, g
	a.ctx = ctx
	return a, nil
}

// errReloaded ends a warm whose configuration was replaced.
var errReloaded = errors.New("the configuration was reloaded; restart to warm again")

// warm pre-fills the cache (cache.warm) through the tile core of the
// configuration in force at start. It belongs to that generation: a
// reload stops it (its tilesets, credentials and plan may be gone), so it
// never refills the cache with what the new configuration cannot reach.
func (a *app) warm(ctx context.Context, cfg config.Warm) {
	a.reloadMu.Lock()
	g := a.gen
	ctx, stop := context.WithCancelCause(ctx)
	if g != nil {
		g.stopWarm = stop
	}
	a.reloadMu.Unlock()
	defer stop(nil)
	c := a.proxy.Core()
	if g != nil {
		c = g.proxy.Core()
	}
	deps := warm.Deps{Logger: a.log, Metrics: a.metrics}
	plan, err := warm.NewPlan(ctx, cfg, c, deps)
	if err != nil {
		a.log.Error("cache warm not started", "err", err)
		return
	}
	plan.Run(ctx, c, cfg.Concurrency, deps)
}

// run listens, serves until ctx is cancelled, then drains: /readyz turns
// 503 at once and in-flight requests get shutdown_timeout to finish.
// started, when non-nil, is called with the main address once listening.
func (a *app) run(ctx context.Context, started func(addr string)) error {
	tcp, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.Listen, err)
	}
	// Headers and body leave in one writev instead of two writes. Not
	// under TLS (records are written one by one, and there is no
	// sendfile) nor with h2c: HTTP/2's framer expects each write to
	// leave, and a write held for the next one stalls the connection.
	var ln net.Listener = tcp
	if !a.cfg.TLS.On() && !a.cfg.H2C {
		if ln, err = coalesce.NewListener(coalesce.Config{}, tcp); err != nil {
			tcp.Close()
			return err
		}
	}
	if a.limits == (serverLimits{}) {
		a.limits = defaultLimits
	}
	if a.current.Load() == nil {
		a.current.Store(a.proxy)
	}
	// A connection's worth of HTTP/2 stream workers (more streams at once
	// run on their own goroutines), gone 2 s after a burst.
	streams := workers.New(2*time.Second, max(1, a.cfg.HTTP2.MaxConcurrentStreams))
	var upgrader *h2c.Upgrader
	main := &http.Server{
		// One atomic load a request: a reload swaps the proxy, and
		// requests in flight finish on the one they started with.
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := a.current.Load()
			if r.ProtoMajor == 2 {
				// net/http serves each HTTP/2 stream on a new goroutine:
				// the hit path runs on a worker whose stack is grown.
				streams.Do(func() { h.ServeHTTP(w, r) })
				return
			}
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: a.limits.readHeader,
		ReadTimeout:       a.limits.read,
		WriteTimeout:      a.limits.write,
		IdleTimeout:       a.limits.idle,
		MaxHeaderBytes:    a.limits.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: max(1, a.cfg.HTTP2.MaxConcurrentStreams),
			CountError: a.metrics.HTTP2Error},
		Protocols: new(http.Protocols),
	}
	main.Protocols.SetHTTP1(true)
	switch {
	case a.certs != nil:
		// HTTP/2 by ALPN, HTTP/1.1 still.
		main.Protocols.SetHTTP2(true)
		main.TLSConfig = a.certs.Config(a.cfg.TLS.MinVersion)
	case a.cfg.H2C:
		// Cleartext HTTP/2 with prior knowledge (net/http), and by
		// `Upgrade: h2c` from HTTP/1.1 (internal/h2c), beside HTTP/1.1.
		main.Protocols.SetUnencryptedHTTP2(true)
		upgrader = h2c.New(main, main.Handler)
		main.Handler = upgrader
	}
	servers := []*http.Server{main}
	errc := make(chan error, 2)
	go func() {
		if main.TLSConfig != nil {
			errc <- main.ServeTLS(ln, "", "")
			return
		}
		errc <- main.Serve(ln)
	}()
	if a.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", a.cfg.MetricsListen)
		if err != nil {
			main.Close()
			return fmt.Errorf("listen %s (metrics_listen): %w", a.cfg.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry}))
		// The same connection limits as the main listener: a silent or
		// idle connection must not stay open for ever.
		ms := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: a.limits.readHeader,
			ReadTimeout:       a.limits.read,
			WriteTimeout:      time.Minute,
			IdleTimeout:       a.limits.idle,
			MaxHeaderBytes:    a.limits.maxHeaderBytes,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		}
		servers = append(servers, ms)
		if a.metricsCerts != nil {
			ms.TLSConfig = a.metricsCerts.Config(a.cfg.MetricsTLS.MinVersion)
		}
		go func() {
			if ms.TLSConfig != nil {
				errc <- ms.ServeTLS(mln, "", "")
				return
			}
			errc <- ms.Serve(mln)
		}()
		a.metricsAddr = mln.Addr().String()
		a.log.Info("metrics listening", "addr", a.metricsAddr)
	}
	if w := a.cfg.Cache.Warm; len(w.Tiles) > 0 && a.cache != nil {
		var warmed atomic.Bool
		a.readiness.Warmed = warmed.Load
		go func() {
			defer warmed.Store(true)
			a.warm(ctx, w)
		}()
	}
	go a.proxy.AwaitReady(ctx, a.readiness)
	a.log.Info("tileproxy listening", "addr", ln.Addr().String(), "tilesets", len(a.cfg.Tilesets))
	if started != nil {
		started(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.draining.Store(true)
	a.reloadMu.Lock() // a reload in progress finishes first, so the drain reaches its proxy
	a.current.Load().Drain()
	a.reloadMu.Unlock()
	a.log.Info("draining", "delay", a.cfg.DrainDelay.Duration(), "timeout", a.cfg.ShutdownTimeout.Duration())
	// Keep serving while /readyz says 503, so load balancers move away
	// before the listeners close.
	select {
	case <-time.After(a.cfg.DrainDelay.Duration()):
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout.Duration())
	defer cancel()
	var errs []error
	upgraded := make(chan error, 1)
	if upgrader != nil {
		// Beside the server's own drain: it does not see the connections
		// upgraded to HTTP/2, which were hijacked from it.
		go func() { upgraded <- upgrader.Shutdown(sctx) }()
	} else {
		upgraded <- nil
	}
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := <-upgraded; err != nil {
		errs = append(errs, fmt.Errorf("h2c: %w", err))
	}
	if a.controls != nil {
		a.controls.close() // after the last answer: what it counted is settled
	}
	if a.audit != nil {
		if err := a.audit.Close(); err != nil {
			errs = append(errs, err)
		}
		a.stopShip()
	}
	return errors.Join(errs...)
}

// loadValid loads the configuration file at path and validates it.
func loadValid(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config %s:\n%w", path, err)
	}
	return cfg, nil
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "tileproxy.yaml", "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var problems []string
	if err := cfg.Validate(); err != nil {
		problems = strings.Split(err.Error(), "\n")
	}
	if _, err := auth.LoadPublicKeys(cfg.Auth.PublicKeys); err != nil && len(cfg.Auth.PublicKeys) > 0 {
		problems = append(problems, "auth.public_keys: "+err.Error())
	}
	if _, err := loadAreas(cfg); err != nil {
		problems = append(problems, strings.Split(err.Error(), "\n")...)
	}
	if _, err := revoke.New(cfg.RevocationPath(), revoke.Deps{}); err != nil {
		problems = append(problems, err.Error())
	}
	for name, t := range map[string]config.TLS{"tls": cfg.TLS, "metrics_tls": cfg.MetricsTLS} {
		if t.On() {
			if _, err := certs.Load(cfg.TLSPath(t.CertFile), cfg.TLSPath(t.KeyFile), time.Now()); err != nil {
				problems = append(problems, name+": "+err.Error())
			}
		}
	}
	for _, w := range scopeWarnings(cfg) {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "%s: %d problem(s):\n", *path, len(problems))
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d tilesets, %d issuers)\n", *path, len(cfg.Tilesets), len(cfg.Auth.Issuers))
	return 0
}

// loadAreas reads and indexes the configuration's areas; every problem
// names its area.
func loadAreas(cfg *config.Config) (area.Set, error) {
	names := slices.Sorted(maps.Keys(cfg.Areas))
	set, err := area.LoadSet(names, cfg.AreaPath)
	if err != nil {
		return nil, fmt.Errorf("areas: %w", err)
	}
	return set, nil
}

// scopeWarnings names the scoped grant rules on tilesets whose paths may
// not be {z}/{x}/{y}.{ext} (a prefix tileset with no format): a scoped
// grant answers 403 to any other path.
func scopeWarnings(cfg *config.Config) []string {
	var out []string
	for i, is := range cfg.Auth.Issuers {
		for j, g := range is.Grants {
			scoped := map[string]bool{}
			for _, vals := range g.Values {
				for _, v := range vals {
					if !v.Scope.Unconstrained() {
						scoped[v.Tileset] = true
					}
				}
			}
			for _, t := range cfg.Tilesets {
				if t.Archive != "" || t.Format != "" {
					continue
				}
				if scoped[t.Name] || scoped["*"] || (g.Scope != nil && g.Pattern != "") {
					out = append(out, fmt.Sprintf("auth.issuers[%d].grants[%d]: scoped grants on tileset %s, whose format is not set: "+
						"only {z}/{x}/{y}.{ext} paths can be judged, any other answers 403", i, j, t.Name))
				}
			}
		}
	}
	return out
}

func tokenCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secretEnv := fs.String("secret-env", "TILEPROXY_HMAC_SECRET", "environment variable holding the HMAC secret")
	keyFile := fs.String("key", "", "sign with this PEM private key (RS256, ES256 or EdDSA) instead of the HMAC secret, as an issuer would")
	kid := fs.String("kid", "", "kid header")
	tilesets := fs.String("tilesets", "", "comma-separated tileset names, or * for all, in the grants claim")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	sub := fs.String("sub", "", "subject (sub claim)")
	iss := fs.String("iss", "", "issuer (iss claim)")
	aud := fs.String("aud", "", "audience (aud claim)")
	claim := fs.String("grants-claim", "tilesets", "name of the grants claim")
	var extra claimFlags
	fs.Var(&extra, "claim", "name=value: a claim for an issuer's grant rules; value is JSON when it parses ('realm_access={\"roles\":[\"analysts\"]}'), else a string ('scope=tiles:city tiles:roads'); repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := auth.MintOptions{TTL: *ttl, Subject: *sub, Issuer: *iss, Audience: *aud, GrantsClaim: *claim, KID: *kid, Claims: extra.m}
	if *keyFile != "" {
		data, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("token: %w", err)
		}
		if o.Key, err = auth.ParsePrivateKeyPEM(data); err != nil {
			return fmt.Errorf("token: %s: %w", *keyFile, err)
		}
	} else if o.Secret = []byte(os.Getenv(*secretEnv)); len(o.Secret) == 0 {
		return fmt.Errorf("token: $%s is empty; export the HMAC secret there (or sign with -key)", *secretEnv)
	}
	if *tilesets == "" && len(extra.m) == 0 {
		return errors.New("token: -tilesets or -claim is required (e.g. -tilesets city,roads, -tilesets '*', or -claim 'scope=tiles:city')")
	}
	for _, n := range strings.Split(*tilesets, ",") {
		if n = strings.TrimSpace(n); n != "" {
			o.Tilesets = append(o.Tilesets, n)
		}
	}
	tok, err := auth.Mint(o)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// claimFlags collects -claim name=value.
type claimFlags struct{ m map[string]any }

func (c *claimFlags) String() string { return "" }

func (c *claimFlags) Set(s string) error {
	name, val, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want name=value, got %q", s)
	}
	if c.m == nil {
		c.m = map[string]any{}
	}
	var v any
	if err := json.Unmarshal([]byte(val), &v); err != nil {
		v = val
	}
	c.m[name] = v
	return nil
}
