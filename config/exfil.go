package config

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
)

// The values of limits.on_store_error.
const (
	OnStoreErrorAllow = "allow"
	OnStoreErrorDeny  = "deny"
)

// The values of limits.sweep.action.
const (
	SweepLog      = "log"
	SweepThrottle = "throttle"
	SweepBlock    = "block"
)

// StoreMemory is limits.store for counters of this process alone.
const StoreMemory = "memory"

// Quota bounds the tiles one principal is answered (200 and 206) from one
// tileset in each window of Per.
type Quota struct {
	Tiles int64    `yaml:"tiles"`
	Per   Duration `yaml:"per"`
}

// Sweep flags a principal that asks for more than Distinct distinct tiles
// in a window of Per, and acts on it.
type Sweep struct {
	Distinct int64    `yaml:"distinct"`
	Per      Duration `yaml:"per"`
	// Action is log, throttle or block.
	Action string `yaml:"action"`
	// ThrottleRate is a throttled principal's requests per second.
	ThrottleRate float64 `yaml:"throttle_rate"`
}

// Revocation names the file of revoked subjects and token IDs: lines
// "sub <iss> <sub>" ("-" for self-issued tokens) and "jti <jti>".
type Revocation struct {
	File string `yaml:"file"`
}

// RedisStore reports whether limits.store names a Redis server.
func (l *Limits) RedisStore() bool {
	return strings.HasPrefix(l.Store, "redis://") || strings.HasPrefix(l.Store, "rediss://")
}

// StoreName is limits.store without its password: safe to log.
func (l *Limits) StoreName() string {
	if !l.RedisStore() {
		return l.Store
	}
	u, err := url.Parse(l.Store)
	if err != nil {
		return "redis"
	}
	return u.Redacted()
}

// QuotaOf is the quota of tileset ts: its own, else limits.quota; nil
// when neither is set (or the one that applies has tiles: 0).
func (c *Config) QuotaOf(ts *Tileset) *Quota {
	q := c.Limits.Quota
	if ts.Quota != nil {
		q = ts.Quota
	}
	if q == nil || q.Tiles == 0 {
		return nil
	}
	return q
}

func validateQuota(field string, q *Quota, bad func(field, format string, args ...any)) {
	if q == nil {
		return
	}
	if q.Tiles < 0 {
		bad(field+".tiles", "must not be negative (0 turns the quota off)")
	}
	if d := q.Per.Duration(); q.Tiles > 0 && (d < time.Second || d > 31*24*time.Hour) {
		bad(field+".per", "%s must be between 1s and 744h", d)
	}
}

func (c *Config) validateExfil(bad func(field, format string, args ...any)) {
	l := &c.Limits
	switch {
	case l.Store == "" || l.Store == StoreMemory:
	case l.RedisStore():
		if u, err := url.Parse(l.Store); err != nil || u.Host == "" {
			bad("limits.store", "is not a redis://[user:password@]host:port/db URL")
		}
	default:
		bad("limits.store", "must be memory or a redis:// (rediss://) URL")
	}
	switch l.OnStoreError {
	case "", OnStoreErrorAllow, OnStoreErrorDeny:
	default:
		bad("limits.on_store_error", "%q must be allow or deny", l.OnStoreError)
	}
	validateQuota("limits.quota", l.Quota, bad)
	for i := range c.Tilesets {
		validateQuota(fmt.Sprintf("tilesets[%d].quota", i), c.Tilesets[i].Quota, bad)
	}
	if s := l.Sweep; s != nil && s.Distinct != 0 {
		if s.Distinct < 0 {
			bad("limits.sweep.distinct", "must not be negative (0 turns sweep detection off)")
		}
		if d := s.Per.Duration(); d < time.Second || d > 31*24*time.Hour {
			bad("limits.sweep.per", "%s must be between 1s and 744h", d)
		}
		switch s.Action {
		case SweepLog, SweepBlock:
		case SweepThrottle:
			if !(s.ThrottleRate > 0) || math.IsInf(s.ThrottleRate, 0) {
				bad("limits.sweep.throttle_rate", "must be a positive number of requests per second")
			}
		default:
			bad("limits.sweep.action", "%q must be log, throttle or block", s.Action)
		}
	}
}
