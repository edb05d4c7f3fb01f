// Package metrics defines tileproxy's Prometheus collectors. They are
// registered on a registry passed in by the caller, never the global one,
// and every label takes values from a bounded set: configured tileset
// names (or "_unknown"), status codes, and fixed result/reason words.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every tileproxy metric.
const Namespace = "tileproxy"

// UnknownTileset is the tileset label for names that are not configured,
// so a scanner cannot create unbounded label values.
const UnknownTileset = "_unknown"

// Build describes the running binary for tileproxy_build_info.
type Build struct {
	Version, Revision, GoVersion string
}

// Metrics holds the collectors. A nil *Metrics is valid and records nothing,
// which keeps unit tests free of registry plumbing.
type Metrics struct {
	requests       *prometheus.CounterVec
	byProtocol     [len(protocols)]prometheus.Counter
	http2Errors    *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	cacheRequests  *prometheus.CounterVec
	CacheBytes     prometheus.Gauge
	CacheObjects   prometheus.Gauge
	CacheEvictions prometheus.Counter
	originRequests *prometheus.CounterVec
	originDuration *prometheus.HistogramVec
	originInFlight prometheus.Gauge
	authFailures   *prometheus.CounterVec
	stsAssumeRole  *prometheus.CounterVec
	stsExpiry      *prometheus.GaugeVec
	jwksRefresh    *prometheus.CounterVec
	jwksKeys       prometheus.Gauge
	limited        *prometheus.CounterVec
	sweeps         *prometheus.CounterVec
	auditLines     *prometheus.CounterVec
	auditShipped   *prometheus.CounterVec
	auditWritten   prometheus.Counter
	storeUp        prometheus.Gauge
	storeErrors    prometheus.Counter
	configReloads  *prometheus.CounterVec
	configInfo     *prometheus.GaugeVec
	warmPlanned    prometheus.Gauge
	warmTiles      *prometheus.CounterVec

	// Resolved children, so the per-request path hashes no label values.
	// Keys are bounded like the labels: configured tilesets x codes seen.
	reqByCode   sync.Map // codeKey -> prometheus.Counter
	durByTS     sync.Map // tileset -> prometheus.Observer
	originByRes sync.Map // resultKey -> prometheus.Counter
	originDurTS sync.Map // tileset -> prometheus.Observer
	cacheByRes  map[string]prometheus.Counter
}

type codeKey struct {
	tileset string
	code    int
}

type resultKey struct {
	tileset, result string
}

// New creates the collectors and registers them, with the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer, b Build) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "requests_total",
			Help: "HTTP requests answered, by tileset and status code.",
		}, []string{"tileset", "code"}),
		// Buckets from 100 µs (a cache hit) to 10 s (a slow origin).
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "request_duration_seconds",
			Help:    "Time to answer a tile request, by tileset.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"tileset"}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "cache_requests_total",
			Help: "Cache lookups by result: hit, miss, stale, negative.",
		}, []string{"result"}),
		CacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "cache_bytes", Help: "Bytes held by the tile cache.",
		}),
		CacheObjects: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "cache_objects", Help: "Entries in the tile cache.",
		}),
		CacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "cache_evictions_total", Help: "Entries evicted to stay within max_bytes.",
		}),
		originRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "origin_requests_total",
			Help: "Requests to S3 by tileset and result (ok, not_modified, not_found, denied, unavailable, timeout, canceled, range, saturated).",
		}, []string{"tileset", "result"}),
		originDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "origin_request_duration_seconds",
			Help:    "Time to S3 response headers, by tileset.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"tileset"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "auth_failures_total",
			Help: "Refused requests by reason (no_token, expired, bad_signature, not_granted, ...).",
		}, []string{"reason"}),
		stsAssumeRole: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sts_assume_role_total",
			Help: "STS AssumeRole calls by tileset and result (ok, error).",
		}, []string{"tileset", "result"}),
		stsExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "sts_credentials_expiry_seconds",
			Help: "Unix time at which the tileset's current assumed-role credentials expire.",
		}, []string{"tileset"}),
		jwksRefresh: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "jwks_refresh_total",
			Help: "JWKS fetches by result (ok, error).",
		}, []string{"result"}),
		jwksKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "jwks_keys",
			Help: "Keys held from the JWKS after the last fetch.",
		}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "limited_total",
			Help: "Requests refused by a per-principal limit, by reason (streams, rate, quota, sweep, throttle: 429; store: 503).",
		}, []string{"reason"}),
		configReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result (ok, error).",
		}, []string{"result"}),
		originInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "origin_in_flight",
			Help: "Origin requests holding one of s3.max_in_flight slots (until the headers for a stream, until the body is read for the cache).",
		}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "config_info",
			Help: "The configuration in force: its file's SHA-256 (first 12 hex digits) as a label; always 1.",
		}, []string{"sha256"}),
		warmPlanned: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "cache_warm_planned_tiles",
			Help: "Tiles the cache warm at start plans to fetch (cache.warm); progress is cache_warm_tiles_total over it.",
		}),
		auditLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "audit_lines_total",
			Help: "Audit trail lines by result: written, or error (the answer was refused with 503 instead).",
		}, []string{"result"}),
		auditShipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "audit_shipped_total",
			Help: "Rotated audit files shipped to audit.ship, by result: ok (verified, local copy removed), error (retried).",
		}, []string{"result"}),
		sweeps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sweeps_total",
			Help: "Principals flagged for sweeping (limits.sweep), by action (log, throttle, block).",
		}, []string{"action"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "limits_store_up",
			Help: "1 while the last settle with limits.store reached it, 0 while it is unreachable (limits fall back as on_store_error says).",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "limits_store_errors_total",
			Help: "Settles with limits.store that failed.",
		}),
		warmTiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "cache_warm_tiles_total",
			Help: "Tiles the cache warm has done, by result (cached, missing, failed).",
		}, []string{"result"}),
	}
	m.auditWritten = m.auditLines.WithLabelValues("written")
	m.cacheByRes = map[string]prometheus.Counter{}
	for _, r := range []string{"hit", "miss", "stale", "negative"} {
		m.cacheByRes[r] = m.cacheRequests.WithLabelValues(r)
	}
	protoVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "requests_by_protocol_total",
		Help: "HTTP requests answered on every route, by protocol (HTTP/1.0, HTTP/1.1, HTTP/2.0).",
	}, []string{"protocol"})
	for i, p := range protocols {
		m.byProtocol[i] = protoVec.WithLabelValues(p)
	}
	m.http2Errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "http2_errors_total",
		Help: "HTTP/2 protocol errors net/http's server counted, by type (too_many_early_resets: a rapid-reset flood; conn_... and stream_... others).",
	}, []string{"type"})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Build information; always 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		m.requests, m.duration, m.cacheRequests, m.CacheBytes, m.CacheObjects, m.CacheEvictions,
		m.originRequests, m.originDuration, m.originInFlight, m.authFailures, m.stsAssumeRole, m.stsExpiry,
		m.jwksRefresh, m.jwksKeys, m.limited, m.configReloads, m.configInfo, m.warmPlanned, m.warmTiles, info,
		m.sweeps, m.storeUp, m.storeErrors, m.auditLines, m.auditShipped, protoVec, m.http2Errors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// codes caches status-code label strings so the hot path does not format them.
var codes = func() (c [600]string) {
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return
}()

func codeLabel(code int) string {
	if code >= 0 && code < len(codes) {
		return codes[code]
	}
	return strconv.Itoa(code)
}

// Request records one answered request. tileset must already be bounded.
func (m *Metrics) Request(tileset string, code int, d time.Duration) {
	if m == nil {
		return
	}
	counter(&m.reqByCode, codeKey{tileset, code}, m.requests, tileset, codeLabel(code)).Inc()
	observer(&m.durByTS, tileset, m.duration).Observe(d.Seconds())
}

// protocols are the protocol label's values: every one net/http serves.
var protocols = [...]string{"HTTP/1.0", "HTTP/1.1", "HTTP/2.0"}

// Protocol counts one request answered over HTTP major.minor (the
// request's ProtoMajor, ProtoMinor).
func (m *Metrics) Protocol(major, minor int) {
	if m == nil {
		return
	}
	switch {
	case major == 2:
		m.byProtocol[2].Inc()
	case major == 1 && minor == 0:
		m.byProtocol[0].Inc()
	default:
		m.byProtocol[1].Inc()
	}
}

// HTTP2Error counts one HTTP/2 error (http.HTTP2Config.CountError). The
// types are a fixed set of net/http's (lower case, digits, _), so the
// label is bounded.
func (m *Metrics) HTTP2Error(errType string) {
	if m == nil {
		return
	}
	m.http2Errors.WithLabelValues(errType).Inc()
}

// counter returns vec's child for labels, resolved once and kept in m
// under k, so a steady state does no label hashing.
// The two labels are separate parameters, not variadic, so the steady
// state builds no slice.
// The key is a type parameter rather than an any, so the conversion for
// Load stays on the stack and only the miss path boxes it.
func counter[K comparable](m *sync.Map, k K, vec *prometheus.CounterVec, label1, label2 string) prometheus.Counter {
	if c, ok := m.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c, _ := m.LoadOrStore(k, vec.WithLabelValues(label1, label2))
	return c.(prometheus.Counter)
}

// observer is counter for a histogram labelled by tileset alone.
func observer(m *sync.Map, tileset string, vec *prometheus.HistogramVec) prometheus.Observer {
	if o, ok := m.Load(tileset); ok {
		return o.(prometheus.Observer)
	}
	o, _ := m.LoadOrStore(tileset, vec.WithLabelValues(tileset))
	return o.(prometheus.Observer)
}

// Cache records one cache lookup result: hit, miss, stale or negative.
func (m *Metrics) Cache(result string) {
	if m == nil {
		return
	}
	if c, ok := m.cacheByRes[result]; ok {
		c.Inc()
		return
	}
	m.cacheRequests.WithLabelValues(result).Inc()
}

// Origin records one origin request.
func (m *Metrics) Origin(tileset, result string, d time.Duration) {
	if m == nil {
		return
	}
	counter(&m.originByRes, resultKey{tileset, result}, m.originRequests, tileset, result).Inc()
	observer(&m.originDurTS, tileset, m.originDuration).Observe(d.Seconds())
}

// OriginInFlight moves the count of origin slots taken by delta.
func (m *Metrics) OriginInFlight(delta int) {
	if m == nil {
		return
	}
	m.originInFlight.Add(float64(delta))
}

// WarmPlanned records how many tiles the cache warm plans.
func (m *Metrics) WarmPlanned(n int) {
	if m == nil {
		return
	}
	m.warmPlanned.Set(float64(n))
	for _, r := range []string{"cached", "missing", "failed"} {
		m.warmTiles.WithLabelValues(r) // present at 0 from the start
	}
}

// WarmTile records one tile the warm did: cached, missing or failed.
func (m *Metrics) WarmTile(result string) {
	if m == nil {
		return
	}
	m.warmTiles.WithLabelValues(result).Inc()
}

// AuthFailure records a refused request.
func (m *Metrics) AuthFailure(reason string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(reason).Inc()
}

// AssumeRole records one STS AssumeRole call and, on success, the expiry.
func (m *Metrics) AssumeRole(tileset string, err error, expires time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.stsAssumeRole.WithLabelValues(tileset, "error").Inc()
		return
	}
	m.stsAssumeRole.WithLabelValues(tileset, "ok").Inc()
	m.stsExpiry.WithLabelValues(tileset).Set(float64(expires.Unix()))
}

// JWKSRefresh records one JWKS fetch and the keys held after it.
func (m *Metrics) JWKSRefresh(ok bool, keys int) {
	if m == nil {
		return
	}
	if ok {
		m.jwksRefresh.WithLabelValues("ok").Inc()
	} else {
		m.jwksRefresh.WithLabelValues("error").Inc()
	}
	m.jwksKeys.Set(float64(keys))
}

// AuditLine counts an audit line by result (written, error).
func (m *Metrics) AuditLine(result string) {
	if m == nil {
		return
	}
	if result == "written" {
		m.auditWritten.Inc()
		return
	}
	m.auditLines.WithLabelValues(result).Inc()
}

// AuditShipped counts a rotated audit file's upload by result.
func (m *Metrics) AuditShipped(result string) {
	if m == nil {
		return
	}
	m.auditShipped.WithLabelValues(result).Inc()
}

// Sweep records a principal flagged for sweeping.
func (m *Metrics) Sweep(action string) {
	if m == nil {
		return
	}
	m.sweeps.WithLabelValues(action).Inc()
}

// StoreUp records whether a settle reached the limits store.
func (m *Metrics) StoreUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.storeUp.Set(1)
	} else {
		m.storeUp.Set(0)
		m.storeErrors.Inc()
	}
}

// Limited records a request refused by a per-principal limit; reason is
// "streams", "rate", "quota", "sweep", "throttle" or "store".
func (m *Metrics) Limited(reason string) {
	if m == nil {
		return
	}
	m.limited.WithLabelValues(reason).Inc()
}

// ConfigReload records one configuration reload.
func (m *Metrics) ConfigReload(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.configReloads.WithLabelValues("ok").Inc()
	} else {
		m.configReloads.WithLabelValues("error").Inc()
	}
}

// ConfigInfo marks the configuration in force by its hash; only one
// series exists at a time.
func (m *Metrics) ConfigInfo(sha256 string) {
	if m == nil {
		return
	}
	m.configInfo.Reset()
	m.configInfo.WithLabelValues(sha256).Set(1)
}
