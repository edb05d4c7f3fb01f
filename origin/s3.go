package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/tileproxy/tileproxy/config"
)

// Deps are the S3 origin's collaborators; zero values get defaults.
type Deps struct {
	// Logger receives credential and configuration notices.
	Logger *slog.Logger
	// Credentials replaces the AWS default chain as the base credentials
	// (tests, demo). Nil means the default chain: env, shared profile,
	// web identity (IRSA), ECS task role, EC2 instance role.
	Credentials aws.CredentialsProvider
	// HTTPClient replaces the SDK's HTTP client for S3 and STS calls
	// (recording and fault injection in tests).
	HTTPClient awsconfig.HTTPClient
	// OnAssumeRole, when set, is told of every STS AssumeRole call (for
	// metrics): the tileset, the error, and on success the expiry.
	OnAssumeRole func(tileset string, err error, expires time.Time)
	// Now is the clock for credential refresh; time.Now when nil.
	Now func() time.Time
}

// S3 is a Fetcher backed by the AWS SDK's S3 client.
type S3 struct {
	timeout time.Duration
	clients map[string]*s3.Client // tileset name -> client with that tileset's credentials
	roles   map[string]*roleCredentials
	base    *s3.Client // base credentials, for tilesets without a role
}

var _ Fetcher = (*S3)(nil)

// New builds the S3 origin for cfg: one client per tileset, sharing a
// connection pool. It does not contact S3.
func New(ctx context.Context, cfg *config.Config, deps Deps) (*S3, error) {
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	// The SDK's own buildable client is always used for loading config,
	// so AWS_CA_BUNDLE and friends apply; an injected client (tests,
	// fault injection) replaces it per service client below.
	var httpClient awsconfig.HTTPClient = awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = cfg.S3.ConnectTimeout.Duration() }).
		WithTransportOptions(func(t *http.Transport) {
			// Tile traffic is many small GETs to one host: keep enough
			// idle connections that a burst does not redial.
			t.MaxIdleConns = 256
			t.MaxIdleConnsPerHost = 128
			t.ResponseHeaderTimeout = cfg.S3.Timeout.Duration()
		})
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(cfg.S3.Region),
		awsconfig.WithHTTPClient(httpClient),
		// A tile request is interactive: one retry, not the SDK's three
		// with backoff, so a dead origin answers 502 in bounded time.
		awsconfig.WithRetryMaxAttempts(2),
		// Checksums are validated only where S3 requires them; tiles are
		// small, TLS already protects them, and ranges cannot be checked.
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
	}
	if deps.Credentials != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(deps.Credentials))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("origin: aws config: %w", err)
	}
	// The SDK's client follows 307 and 308 redirects to any host: an
	// endpoint (or something on its path) could send a tile request, or
	// STS's answer, to a host nobody configured. None is followed; the
	// redirect itself is an error (502). The client is built once from
	// the SDK's transport (AWS_CA_BUNDLE applied), so every tileset's S3
	// client and STS share one connection pool.
	if bc, ok := awsCfg.HTTPClient.(*awshttp.BuildableClient); ok {
		awsCfg.HTTPClient = &http.Client{Transport: bc.GetTransport(), Timeout: bc.GetTimeout(),
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	newClient := func(creds aws.CredentialsProvider) *s3.Client {
		return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
			if cfg.S3.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.S3.Endpoint)
			}
			o.UsePathStyle = cfg.S3.UsePathStyle
			if deps.HTTPClient != nil {
				o.HTTPClient = deps.HTTPClient
			}
			if creds != nil {
				o.Credentials = creds
			}
		})
	}
	o := &S3{
		timeout: cfg.S3.Timeout.Duration(),
		clients: make(map[string]*s3.Client, len(cfg.Tilesets)),
		roles:   map[string]*roleCredentials{},
		base:    newClient(nil),
	}
	for i := range cfg.Tilesets {
		t := &cfg.Tilesets[i]
		creds, err := tilesetCredentials(cfg, t, awsCfg, deps)
		if err != nil {
			return nil, err
		}
		if creds == nil {
			o.clients[t.Name] = o.base
			continue
		}
		o.roles[t.Name] = creds
		o.clients[t.Name] = newClient(creds)
	}
	return o, nil
}

// Credentials returns the credentials tileset reads with right now
// (assumed-role ones when it has a role). For readiness probes and tests;
// the secret parts must never be logged.
func (o *S3) Credentials(ctx context.Context, tileset string) (aws.Credentials, error) {
	if r, ok := o.roles[tileset]; ok {
		return r.Retrieve(ctx)
	}
	client, ok := o.clients[tileset]
	if !ok {
		return aws.Credentials{}, fmt.Errorf("origin: unknown tileset %q", tileset)
	}
	return client.Options().Credentials.Retrieve(ctx)
}

// ProbeKey is the object HeadObject'ed under each tileset's prefix to
// check the origin answers; it need not exist.
const ProbeKey = ".tileproxy-readiness-probe"

// Probe checks that S3 (and STS, for a tileset with a role) answers for
// tileset with working credentials: a HeadObject that finds the probe
// object, or finds it missing, succeeds.
func (o *S3) Probe(ctx context.Context, tileset, bucket, prefix string) error {
	obj, err := o.Get(ctx, Request{Tileset: tileset, Bucket: bucket, Key: prefix + ProbeKey, HeadOnly: true})
	if err == nil || errors.Is(err, ErrNotFound) {
		if obj != nil && obj.Body != nil {
			obj.Body.Close()
		}
		return nil
	}
	return err
}

// Get fetches req from S3. The timeout covers the wait for response
// headers only: a large object may stream for longer, and the caller's
// context still cancels it at any point.
func (o *S3) Get(ctx context.Context, req Request) (*Object, error) {
	client, ok := o.clients[req.Tileset]
	if !ok {
		client = o.base
	}
	ctx, cancel := context.WithCancel(ctx)
	var timedOut atomic.Bool
	timer := time.AfterFunc(o.timeout, func() { timedOut.Store(true); cancel() })

	var (
		obj *Object
		err error
		op  = "GetObject"
	)
	if req.HeadOnly {
		op = "HeadObject"
		obj, err = o.head(ctx, client, req)
	} else {
		obj, err = o.get(ctx, client, req)
	}
	if !timer.Stop() && timedOut.Load() {
		// The timer fired: whatever error came back is a timeout.
		if obj != nil && obj.Body != nil {
			obj.Body.Close()
		}
		cancel()
		return nil, &Error{Kind: ErrTimeout, Op: op, Err: context.DeadlineExceeded}
	}
	if err != nil {
		cancel()
		return nil, classify(ctx, op, err)
	}
	if obj.Body == nil {
		cancel()
	} else {
		obj.Body = &cancelOnClose{ReadCloser: obj.Body, cancel: cancel}
	}
	return obj, nil
}

func (o *S3) get(ctx context.Context, client *s3.Client, req Request) (*Object, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(req.Bucket), Key: aws.String(req.Key)}
	if req.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(req.IfNoneMatch)
	}
	if req.IfMatch != "" {
		in.IfMatch = aws.String(req.IfMatch)
	}
	if !req.IfModifiedSince.IsZero() {
		in.IfModifiedSince = aws.Time(req.IfModifiedSince)
	}
	if req.Range != "" {
		in.Range = aws.String(req.Range)
	}
	out, err := client.GetObject(ctx, in)
	if err != nil {
		return nil, err
	}
	obj := newObject(out.ContentLength, out.ContentType, out.ContentEncoding, out.ETag, out.LastModified)
	obj.Body = out.Body
	if obj.ContentRange = aws.ToString(out.ContentRange); obj.ContentRange != "" {
		obj.TotalSize = totalFromContentRange(obj.ContentRange)
	}
	return obj, nil
}

func (o *S3) head(ctx context.Context, client *s3.Client, req Request) (*Object, error) {
	in := &s3.HeadObjectInput{Bucket: aws.String(req.Bucket), Key: aws.String(req.Key)}
	if req.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(req.IfNoneMatch)
	}
	if !req.IfModifiedSince.IsZero() {
		in.IfModifiedSince = aws.Time(req.IfModifiedSince)
	}
	out, err := client.HeadObject(ctx, in)
	if err != nil {
		return nil, err
	}
	return newObject(out.ContentLength, out.ContentType, out.ContentEncoding, out.ETag, out.LastModified), nil
}

// newObject gathers the metadata GetObject and HeadObject share; an
// absent length is -1.
func newObject(length *int64, contentType, contentEncoding, etag *string, lastModified *time.Time) *Object {
	obj := &Object{
		Size:            -1,
		ContentType:     aws.ToString(contentType),
		ContentEncoding: aws.ToString(contentEncoding),
		ETag:            aws.ToString(etag),
		LastModified:    aws.ToTime(lastModified),
	}
	if length != nil {
		obj.Size = *length
	}
	obj.TotalSize = obj.Size
	return obj
}

// totalFromContentRange reads the total from "bytes 0-99/1234"; -1 if unknown.
func totalFromContentRange(cr string) int64 {
	_, total, ok := strings.Cut(cr, "/")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// classify maps an SDK error onto the sentinels. The caller's own
// cancellation is returned as the context error, so the proxy can tell a
// client that left (499) from an origin that failed.
func classify(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	var own *Error
	if errors.As(err, &own) {
		// Already classified (an STS failure while getting credentials).
		return own
	}
	e := &Error{Op: op, Err: err, Kind: ErrUnavailable}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		e.Code = apiErr.ErrorCode()
	}
	var reqID interface{ ServiceRequestID() string }
	if errors.As(err, &reqID) {
		e.RequestID = reqID.ServiceRequestID()
	}
	status := 0
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	switch {
	case errors.As(err, &nsk), errors.As(err, &nf):
		e.Kind = ErrNotFound
	case status == http.StatusNotModified || e.Code == "NotModified":
		e.Kind = ErrNotModified
	case status == http.StatusPreconditionFailed || e.Code == "PreconditionFailed":
		e.Kind = ErrChanged
	case status == http.StatusRequestedRangeNotSatisfiable || e.Code == "InvalidRange":
		e.Kind = ErrRangeNotSatisfiable
	case e.Code == "NoSuchBucket":
		// A missing bucket is a configuration error, not a missing tile.
		e.Kind = ErrDenied
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
	case status == http.StatusForbidden || status == http.StatusUnauthorized ||
		e.Code == "AccessDenied" || e.Code == "InvalidAccessKeyId" || e.Code == "SignatureDoesNotMatch" ||
		e.Code == "ExpiredToken" || e.Code == "InvalidToken":
		e.Kind = ErrDenied
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		e.Kind = ErrTimeout
	}
	return e
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// cancelOnClose releases the request's context when the body is closed,
// which is what lets Get hand back a body that outlives its timeout timer.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
