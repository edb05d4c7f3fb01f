package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"golang.org/x/sync/singleflight"

	"github.com/tileproxy/tileproxy/config"
)

// SessionPolicy returns the inline session policy attached to the
// AssumeRole call for a tileset: GetObject on bucket/keys and nothing
// else, where keys is "prefix*" for a prefix tileset and the archive's key
// alone for an archive tileset. The effective permissions are the
// intersection of this and the role's own policy, so even a role that can
// read the whole bucket yields credentials that cannot read another
// tileset's objects.
func SessionPolicy(bucket, keys string) string {
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Sid":      "TileproxyReadTileset",
			"Effect":   "Allow",
			"Action":   []string{"s3:GetObject"},
			"Resource": []string{"arn:aws:s3:::" + bucket + "/" + keys},
		}},
	}
	b, _ := json.Marshal(doc) // a map of strings cannot fail to marshal
	return string(b)
}

// sessionName identifies tileproxy and the tileset in CloudTrail; STS
// allows [\w+=,.@-]{2,64}, which tileset names already satisfy.
func sessionName(tileset string) string {
	n := "tileproxy-" + tileset
	if len(n) > 64 {
		n = n[:64]
	}
	return n
}

// tilesetCredentials returns the credentials tileset t reads with: nil for
// the base credentials when no role applies, else an assumed-role provider
// scoped to t's prefix.
func tilesetCredentials(cfg *config.Config, t *config.Tileset, awsCfg aws.Config, deps Deps) (*roleCredentials, error) {
	role := cfg.RoleARN(t)
	if role == "" {
		deps.Logger.Info("tileset reads with the base credentials (no role_arn)", "tileset", t.Name)
		return nil, nil
	}
	policy := SessionPolicy(t.Bucket, t.Prefix+"*")
	if t.Archive != "" {
		// One object, the archive, and nothing beside it.
		policy = SessionPolicy(t.Bucket, t.Archive)
	}
	if len(policy) > 2048 {
		return nil, fmt.Errorf("origin: tileset %s: session policy too long for STS", t.Name)
	}
	stsClient := sts.NewFromConfig(awsCfg, func(o *sts.Options) {
		if cfg.S3.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(cfg.S3.STSEndpoint)
		} else if cfg.S3.Endpoint != "" {
			// S3-compatible stores (MinIO) answer STS on the S3 endpoint.
			o.BaseEndpoint = aws.String(cfg.S3.Endpoint)
		}
		if deps.HTTPClient != nil {
			o.HTTPClient = deps.HTTPClient
		}
	})
	prov := stscreds.NewAssumeRoleProvider(stsClient, role, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = sessionName(t.Name)
		o.Duration = cfg.S3.SessionDuration.Duration()
		o.Policy = aws.String(policy)
		if cfg.S3.ExternalID != "" {
			o.ExternalID = aws.String(cfg.S3.ExternalID)
		}
	})
	deps.Logger.Info("tileset reads with assumed-role credentials", "tileset", t.Name, "role_arn", role)
	return newRoleCredentials(t.Name, prov, deps), nil
}

// Refresh timing for assumed-role credentials.
const (
	// maxRefreshWindow: refresh at most this long before expiry...
	maxRefreshWindow = 5 * time.Minute
	// ...and at least this fraction of the lifetime before it, so short
	// sessions (tests, or an STS that caps duration) still refresh early.
	refreshFraction = 5
	// expirySafety: credentials this close to expiry are never used
	// (capped at a tenth of the lifetime for very short sessions).
	expirySafety = 5 * time.Second
	minBackoff   = 250 * time.Millisecond
	maxBackoff   = 30 * time.Second
)

// roleCredentials is one tileset's assumed-role credentials. It refreshes
// ahead of expiry, coalesces concurrent refreshes into one STS call, keeps
// serving the current credentials while a refresh fails (until they are
// about to expire), and backs off between failed attempts.
//
// The SDK wraps every provider in its own aws.CredentialsCache; Retrieve
// reports the time of the next refresh as Expires, so that cache comes back
// exactly when this type wants to act and never holds credentials longer.
type roleCredentials struct {
	tileset string
	prov    aws.CredentialsProvider
	log     *slog.Logger
	onCall  func(tileset string, err error, expires time.Time)
	now     func() time.Time
	sf      singleflight.Group

	mu        sync.Mutex // protects the fields below
	cur       aws.Credentials
	hardAt    time.Time // cur is not used from here on (expiry less a margin)
	refreshAt time.Time // when cur should be replaced
	retryAt   time.Time // no STS call before this after a failure
	backoff   time.Duration
	lastErr   error
}

func newRoleCredentials(tileset string, prov aws.CredentialsProvider, deps Deps) *roleCredentials {
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	return &roleCredentials{tileset: tileset, prov: prov, log: deps.Logger, onCall: deps.OnAssumeRole, now: now}
}

// Retrieve implements aws.CredentialsProvider.
func (r *roleCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	now := r.now()
	r.mu.Lock()
	cur, hardAt, refreshAt, retryAt, lastErr := r.cur, r.hardAt, r.refreshAt, r.retryAt, r.lastErr
	r.mu.Unlock()
	usable := cur.HasKeys() && now.Before(hardAt)
	switch {
	case usable && now.Before(refreshAt):
		return r.view(cur, hardAt, refreshAt), nil
	case now.Before(retryAt):
		// Backing off after a failure: the old credentials if they still
		// work, else the failure at once rather than another STS call.
		if usable {
			return r.view(cur, hardAt, retryAt), nil
		}
		return aws.Credentials{}, lastErr
	}
	// The refresh runs detached from any one request: a caller that goes
	// away must not fail the refresh for everyone waiting on it.
	v, err, _ := r.sf.Do("", func() (any, error) {
		// A caller that read the state just before another flight stored
		// fresh credentials (or a failure) must not start a second STS
		// call: look again once inside the flight.
		r.mu.Lock()
		cur, hardAt, refreshAt, retryAt, lastErr := r.cur, r.hardAt, r.refreshAt, r.retryAt, r.lastErr
		r.mu.Unlock()
		if now := r.now(); cur.HasKeys() && now.Before(refreshAt) && now.Before(hardAt) {
			return r.view(cur, hardAt, refreshAt), nil
		} else if now.Before(retryAt) && lastErr != nil {
			return aws.Credentials{}, lastErr
		}
		return r.refresh(context.WithoutCancel(ctx))
	})
	if err != nil {
		if usable {
			r.mu.Lock()
			retryAt = r.retryAt
			r.mu.Unlock()
			return r.view(cur, hardAt, retryAt), nil
		}
		return aws.Credentials{}, err
	}
	return v.(aws.Credentials), nil
}

// view is c with Expires moved up to the next time Retrieve wants to be
// asked, never later than hard (the real expiry less the safety margin).
func (r *roleCredentials) view(c aws.Credentials, hard, next time.Time) aws.Credentials {
	if hard.Before(next) {
		next = hard
	}
	c.CanExpire = true
	c.Expires = next
	return c
}

func (r *roleCredentials) refresh(ctx context.Context) (aws.Credentials, error) {
	c, err := r.prov.Retrieve(ctx)
	now := r.now()
	if r.onCall != nil {
		r.onCall(r.tileset, err, c.Expires)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.backoff = min(max(r.backoff*2, minBackoff), maxBackoff)
		r.retryAt = now.Add(r.backoff)
		e := &Error{Kind: ErrUnavailable, Op: "AssumeRole", Err: err}
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) {
			e.Code = apiErr.ErrorCode()
			if e.Code == "AccessDenied" {
				e.Kind = ErrDenied
			}
		}
		var reqID interface{ ServiceRequestID() string }
		if errors.As(err, &reqID) {
			e.RequestID = reqID.ServiceRequestID()
		}
		r.lastErr = e
		r.log.Warn("STS AssumeRole failed", "tileset", r.tileset, "code", e.Code, "request_id", e.RequestID,
			"retry_in", r.backoff, "have_valid_credentials", r.cur.HasKeys() && now.Before(r.hardAt))
		return aws.Credentials{}, e
	}
	life := c.Expires.Sub(now)
	window := min(maxRefreshWindow, life/refreshFraction)
	r.cur, r.refreshAt, r.hardAt = c, c.Expires.Add(-window), c.Expires.Add(-min(expirySafety, life/10))
	r.backoff, r.retryAt, r.lastErr = 0, time.Time{}, nil
	r.log.Debug("STS credentials refreshed", "tileset", r.tileset, "expires", c.Expires)
	return r.view(c, r.hardAt, r.refreshAt), nil
}
