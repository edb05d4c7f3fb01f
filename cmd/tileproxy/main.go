// Command tileproxy is an authenticating reverse proxy for private map
// tiles in S3. This package only parses flags and wires the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tileproxy/tileproxy/auth"
	"github.com/tileproxy/tileproxy/cache"
	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/accesslog"
	"github.com/tileproxy/tileproxy/internal/coalesce"
	"github.com/tileproxy/tileproxy/internal/logbuf"
	"github.com/tileproxy/tileproxy/metrics"
	"github.com/tileproxy/tileproxy/origin"
	"github.com/tileproxy/tileproxy/proxy"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `tileproxy: an authenticating proxy for private map tiles in S3

usage:
  tileproxy [serve] -config tileproxy.yaml   run the server
  tileproxy demo [-listen 127.0.0.1:8080]    zero-setup demo with a map viewer
  tileproxy token -secret-env VAR -tilesets a,b -ttl 1h
                                             mint a development HS256 token
  tileproxy check -config tileproxy.yaml     validate a config
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
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid config %s:\n%w", *path, err)
	}
	logs := newLogger(cfg.Log, stderr)
	defer logs.flush()
	log := logs.log
	lim, gcPct := memoryLimit(cfg.Cache.MaxBytes)
	if lim != nil {
		attrs := []any{"limit_mib", lim.base >> 20}
		if gcPct > 0 {
			attrs = append(attrs, "gc_percent", gcPct)
		}
		log.Info("soft memory limit set from cache.max_bytes (override with GOMEMLIMIT, GOGC)", attrs...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go ignoreHangups(ctx, log)
	app, err := newApp(ctx, cfg, logs, origin.Deps{Logger: log}, lim)
	if err != nil {
		return err
	}
	return app.run(ctx, nil)
}

// ignoreHangups keeps SIGHUP from ending the process (Go's default, which
// skips the drain) until ctx ends. Configuration reload does not exist
// yet, so the signal is only logged.
func ignoreHangups(ctx context.Context, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Warn("SIGHUP received: configuration reload is not supported yet; still serving the configuration loaded at start (restart to apply changes)")
		}
	}
}

// memoryLimit gives the Go runtime a soft memory limit sized from the
// cache, unless GOMEMLIMIT is set: by default the GC lets the heap grow to
// twice the live data, which for a cache-sized heap means twice the memory
// an operator planned for. The limit makes the GC work harder near it
// instead; it is soft, so the process is never killed by it.
//
// With the limit in place, and unless GOGC is set, the GC percent goes
// from 100 to gcPercent: the heap may grow to five times the live data
// (never past the limit) before a collection, instead of twice. While
// bodies were on the heap that took hit traffic from 18 collections per
// 10 s to 5, and 1-4 us less CPU per request. With large bodies in the
// memory file the live heap is ~5 MB and is collected ~5 times a second
// under hit load. Fewer collections (800, 1600) each take longer, and more
// (100, 200) add up to more: either way the tail got worse
// (bench/README.md), so 400 stays. A full cache is governed by the limit
// either way, so the memory bound is unchanged.
// It returns gcPct 0 when GOGC is set and left alone, and a nil limit
// when GOMEMLIMIT is set.
//
// Bodies of 8 KiB and more live in the cache's memory file, which the
// runtime does not see; the limit follows it down (heapLimit), so that a
// heap of small bodies and a file of large ones share one budget.
func memoryLimit(maxBytes config.ByteSize) (lim *heapLimit, gcPct int) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return nil, 0
	}
	// The cache, an eighth for entries evicted but not yet collected and
	// for in-flight bodies, and room for the runtime and the SDK.
	lim = &heapLimit{
		base: max(int64(maxBytes)+int64(maxBytes)/8+32<<20, 64<<20),
		step: max(int64(maxBytes)/8, 1<<20),
	}
	debug.SetMemoryLimit(lim.base)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
		gcPct = gcPercent
	}
	return lim, gcPct
}

// heapLimit keeps the soft memory limit at base less what the cache's
// memory file holds. It moves only when the file has changed by step
// since the last move: setting the limit stops the world for a moment.
type heapLimit struct {
	base, step int64
	last       atomic.Int64 // file bytes at the last move
}

// follow is called with the file's size after the cache changes.
func (h *heapLimit) follow(file int64) {
	if h == nil {
		return
	}
	last := h.last.Load()
	if (file-last < h.step && last-file < h.step) || !h.last.CompareAndSwap(last, file) {
		return
	}
	// The floor leaves the runtime room to work, whatever the file holds.
	debug.SetMemoryLimit(max(h.base-file, 32<<20))
}

// gcPercent is the GC percent used when tileproxy sets the memory limit.
const gcPercent = 400

// logging is where the process writes: events through slog, the access
// line through accesslog (which skips slog's generic formatting), both
// into one stream batched by logbuf so a request does not cost a write.
type logging struct {
	log    *slog.Logger
	access *accesslog.Logger // nil when access lines are off or below the level
	// flush writes out what is batched; call it before exiting.
	flush func() error
}

func newLogger(c config.Log, w io.Writer) logging {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	logs := logging{flush: func() error { return nil }}
	if lw, err := logbuf.New(logbuf.Config{}, w); err == nil { // the defaults cannot fail
		logs.log = slog.New(logbuf.Handler(newHandler(c.Format, lw, opts), lw))
		w, logs.flush = lw, lw.Close
	} else {
		logs.log = slog.New(newHandler(c.Format, w, opts))
	}
	if c.Access && level <= slog.LevelInfo {
		logs.access = accesslog.New(accesslog.ParseFormat(c.Format), w)
	}
	return logs
}

func newHandler(format string, w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// app is a wired server: the proxy, its registry and its settings.
type app struct {
	cfg      *config.Config
	log      *slog.Logger
	proxy    *proxy.Proxy
	registry *prometheus.Registry
	// probe checks one tileset's origin for readiness; nil means ready at once.
	probe func(ctx context.Context, t *config.Tileset) error
	// authReady reports whether the token keys are loaded (the JWKS
	// fetched once); nil means they always are.
	authReady func() bool
	// metricsAddr is the metrics listener's address once run has bound it.
	metricsAddr string
	// limits are the main server's connection limits.
	limits serverLimits
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
func newApp(ctx context.Context, cfg *config.Config, logs logging, originDeps origin.Deps, lim *heapLimit) (*app, error) {
	log := logs.log
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, buildInfo())
	if err != nil {
		return nil, err
	}
	v, err := auth.New(ctx, cfg.Auth, auth.Deps{Logger: log, OnJWKSRefresh: m.JWKSRefresh})
	if err != nil {
		return nil, err
	}
	originDeps.OnAssumeRole = m.AssumeRole
	o, err := origin.New(ctx, cfg, originDeps)
	if err != nil {
		return nil, err
	}
	// max_bytes: 0 turns the cache off: every request streams from S3.
	var c *cache.Cache
	if cfg.Cache.MaxBytes > 0 {
		// A shared fetch runs detached from its requests, so it gets its
		// own bound: time to headers plus time to read a whole body.
		c, err = cache.New(cache.FromConfig(cfg.Cache, 2*cfg.S3.Timeout.Duration()+cfg.S3.ConnectTimeout.Duration()), cache.Deps{
			OnChange: func(bytes, objects int64) {
				m.CacheBytes.Set(float64(bytes))
				m.CacheObjects.Set(float64(objects))
				lim.follow(c.FileBytes())
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
	p, err := proxy.New(cfg, proxy.Deps{Verifier: v, Fetcher: o, Cache: c, Metrics: m, Logger: log, AccessLog: logs.access})
	if err != nil {
		return nil, err
	}
	probe := func(ctx context.Context, t *config.Tileset) error { return o.Probe(ctx, t.Name, t.Bucket, t.Prefix) }
	return &app{cfg: cfg, log: log, proxy: p, registry: reg, probe: probe, authReady: v.Ready, limits: defaultLimits}, nil
}

// run listens, serves until ctx is cancelled, then drains: /readyz turns
// 503 at once and in-flight requests get shutdown_timeout to finish.
// started, when non-nil, is called with the main address once listening.
func (a *app) run(ctx context.Context, started func(addr string)) error {
	tcp, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.Listen, err)
	}
	// Headers and body leave in one writev instead of two writes.
	ln, err := coalesce.NewListener(coalesce.Config{}, tcp)
	if err != nil {
		tcp.Close()
		return err
	}
	if a.limits == (serverLimits{}) {
		a.limits = defaultLimits
	}
	main := &http.Server{
		Handler:           a.proxy,
		ReadHeaderTimeout: a.limits.readHeader,
		ReadTimeout:       a.limits.read,
		WriteTimeout:      a.limits.write,
		IdleTimeout:       a.limits.idle,
		MaxHeaderBytes:    a.limits.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	servers := []*http.Server{main}
	errc := make(chan error, 2)
	go func() { errc <- main.Serve(ln) }()
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
		go func() { errc <- ms.Serve(mln) }()
		a.metricsAddr = mln.Addr().String()
		a.log.Info("metrics listening", "addr", a.metricsAddr)
	}
	go a.becomeReady(ctx)
	a.log.Info("tileproxy listening", "addr", ln.Addr().String(), "tilesets", len(a.cfg.Tilesets))
	if started != nil {
		started(ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.proxy.Drain()
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
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// becomeReady probes every tileset's origin until each has answered once
// and waits for the token keys (a JWKS's first fetch), or until
// readiness_grace has passed, then marks the proxy ready.
func (a *app) becomeReady(ctx context.Context) {
	authReady := a.authReady
	if authReady == nil {
		authReady = func() bool { return true }
	}
	pending := map[string]*config.Tileset{}
	if a.probe != nil {
		for i := range a.cfg.Tilesets {
			pending[a.cfg.Tilesets[i].Name] = &a.cfg.Tilesets[i]
		}
	}
	deadline := time.Now().Add(a.cfg.ReadinessGrace.Duration())
	lastErr := map[string]error{}
	for (len(pending) > 0 || !authReady()) && time.Now().Before(deadline) {
		for name, t := range pending {
			pctx, cancel := context.WithTimeout(ctx, a.cfg.S3.Timeout.Duration())
			err := a.probe(pctx, t)
			cancel()
			if err == nil {
				delete(pending, name)
				continue
			}
			lastErr[name] = err
		}
		if len(pending) == 0 && authReady() {
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
		a.log.Warn("readiness grace passed with the origin still failing for a tileset", "tileset", name, "err", lastErr[name])
	}
	if !authReady() {
		a.log.Warn("readiness grace passed without the JWKS: tokens signed by its keys are refused until it answers")
	}
	a.proxy.SetReady(true)
	a.log.Info("ready")
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
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "%s: %d problem(s):\n", *path, len(problems))
		for _, p := range problems {
			fmt.Fprintln(stderr, "  -", p)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%d tilesets)\n", *path, len(cfg.Tilesets))
	return 0
}

func tokenCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secretEnv := fs.String("secret-env", "TILEPROXY_HMAC_SECRET", "environment variable holding the HMAC secret")
	tilesets := fs.String("tilesets", "", "comma-separated tileset names, or * for all")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	sub := fs.String("sub", "", "subject (sub claim)")
	iss := fs.String("iss", "", "issuer (iss claim)")
	aud := fs.String("aud", "", "audience (aud claim)")
	claim := fs.String("grants-claim", "tilesets", "name of the grants claim")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv(*secretEnv)
	if secret == "" {
		return fmt.Errorf("token: $%s is empty; export the HMAC secret there", *secretEnv)
	}
	if *tilesets == "" {
		return errors.New("token: -tilesets is required (e.g. -tilesets city,roads or -tilesets '*')")
	}
	var names []string
	for _, n := range strings.Split(*tilesets, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	tok, err := auth.MintHMAC(auth.MintOptions{Secret: []byte(secret), Tilesets: names, TTL: *ttl,
		Subject: *sub, Issuer: *iss, Audience: *aud, GrantsClaim: *claim})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
