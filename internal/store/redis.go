package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The keys of the Redis store; counters and sets are named by package
// exfil under keyPrefix.
const (
	keyPrefix      = "tileproxy:"
	revokedKey     = keyPrefix + "revoked"
	revokedVersion = keyPrefix + "revoked:version"
)

// leaseScript adds ARGV[1] to counter KEYS[1], or less when the counter
// would pass ARGV[2] (a quota: the lease is what is left of it), gives a
// new key its lifetime (ARGV[3] ms), and returns what it added and the
// total. Atomic on the server, so replicas never lease one tile twice.
var leaseScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local add = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
if add > cap - cur then add = cap - cur end
if add < 0 then add = 0 end
local total = redis.call('INCRBY', KEYS[1], add)
redis.call('PEXPIRE', KEYS[1], ARGV[3], 'NX')
return {add, total}
`)

// Redis is a Store on a Redis 7 or Valkey server.
type Redis struct {
	c *redis.Client
}

// NewRedis connects (lazily) to the server of url, redis:// or rediss://
// (TLS). Timeouts are short: a request never waits long on the store,
// and a failure is retried by the caller's next settle.
func NewRedis(url string) (*Redis, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		// ParseURL's errors can quote the URL, password and all.
		return nil, fmt.Errorf("limits.store: not a redis URL")
	}
	opt.DialTimeout = time.Second
	opt.ReadTimeout = 500 * time.Millisecond
	opt.WriteTimeout = 500 * time.Millisecond
	opt.MaxRetries = -1 // the next settle is the retry
	opt.PoolSize = 8
	opt.DisableIdentity = true // CLIENT SETINFO: older servers and Valkey answer errors
	return &Redis{c: redis.NewClient(opt)}, nil
}

// Apply implements Store: one pipeline, INCRBY or PFADD and PFCOUNT per
// op, each key given its TTL when it is created (EXPIRE NX).
func (r *Redis) Apply(ctx context.Context, ops []Op) ([]Result, error) {
	pipe := r.c.Pipeline()
	res := make([]*redis.IntCmd, len(ops))
	leases := make([]*redis.Cmd, len(ops))
	var buf []byte
	for i, op := range ops {
		key := keyPrefix + op.Key
		if op.Distinct {
			if len(op.Items) > 0 {
				args := make([]any, len(op.Items))
				for j, h := range op.Items {
					buf = binary.LittleEndian.AppendUint64(buf[:0], h)
					args[j] = string(buf)
				}
				pipe.PFAdd(ctx, key, args...)
			}
			pipe.ExpireNX(ctx, key, op.TTL)
			res[i] = pipe.PFCount(ctx, key)
			continue
		}
		if op.Cap > 0 && op.Add > 0 {
			// The whole script each time (EVAL): a pipeline cannot fall
			// back from EVALSHA, and leases are rare.
			leases[i] = leaseScript.Eval(ctx, pipe, []string{key}, op.Add, op.Cap, op.TTL.Milliseconds())
			continue
		}
		res[i] = pipe.IncrBy(ctx, key, op.Add)
		pipe.ExpireNX(ctx, key, op.TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out := make([]Result, len(ops))
	for i, op := range ops {
		switch {
		case leases[i] != nil:
			v, err := leases[i].Int64Slice()
			if err != nil || len(v) != 2 {
				return nil, fmt.Errorf("%w: lease: %v", ErrUnavailable, err)
			}
			out[i] = Result{Added: v[0], Total: v[1]}
		case op.Distinct:
			out[i] = Result{Total: res[i].Val()}
		default:
			out[i] = Result{Total: res[i].Val(), Added: op.Add}
		}
	}
	return out, nil
}

// Revoke implements Store: the entry and its end in one hash, and a
// version every replica polls.
func (r *Redis) Revoke(ctx context.Context, entry string, until time.Time) error {
	pipe := r.c.TxPipeline()
	pipe.HSet(ctx, revokedKey, entry, until.UnixMilli())
	pipe.Incr(ctx, revokedVersion)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Revocations implements Store. Entries past their end are dropped from
// the hash on the way.
func (r *Redis) Revocations(ctx context.Context, since int64) (int64, map[string]time.Time, error) {
	v, err := r.c.Get(ctx, revokedVersion).Int64()
	switch {
	case err == redis.Nil:
		v = 0
	case err != nil:
		return since, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if v == since {
		return since, nil, nil
	}
	all, err := r.c.HGetAll(ctx, revokedKey).Result()
	if err != nil {
		return since, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	now := time.Now()
	out := make(map[string]time.Time, len(all))
	var expired []string
	for e, ms := range all {
		n, err := strconv.ParseInt(ms, 10, 64)
		if err != nil {
			continue
		}
		if until := time.UnixMilli(n); now.Before(until) {
			out[e] = until
		} else {
			expired = append(expired, e)
		}
	}
	if len(expired) > 0 {
		r.c.HDel(ctx, revokedKey, expired...) // best effort: read again next time
	}
	return v, out, nil
}

// Shared implements Store.
func (r *Redis) Shared() bool { return true }

// Close implements Store.
func (r *Redis) Close() error { return r.c.Close() }
