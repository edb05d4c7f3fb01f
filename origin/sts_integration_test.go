package origin_test

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

// TestSessionPolicyEnforcedByMinIO proves least privilege on a real STS:
// the read-only (non-root) user can read the whole bucket, but the
// credentials assumed for tileset a cannot read b's prefix, and vice versa,
// even when used directly with the SDK, not through the proxy's routing.
func TestSessionPolicyEnforcedByMinIO(t *testing.T) {
	env := readerMinIO(t)
	bucket := env.Bucket(t)
	env.Put(t, bucket, map[string]testenv.Object{
		"a/0/0/0.png": {Body: []byte("tile of a")},
		"b/0/0/0.png": {Body: []byte("tile of b")},
	})
	cfg := roleConfig(t, env, config.Tileset{Name: "a", Bucket: bucket, Prefix: "a/"}, config.Tileset{Name: "b", Bucket: bucket, Prefix: "b/"})
	var (
		mu    sync.Mutex // protects calls
		calls []string
	)
	o, err := origin.New(t.Context(), cfg, origin.Deps{
		Credentials: credentials.NewStaticCredentialsProvider(env.ReaderAccessKey, env.ReaderSecretKey, ""),
		OnAssumeRole: func(ts string, err error, _ time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("AssumeRole for %s: %v", ts, err)
			}
			calls = append(calls, ts)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	read := func(c *s3.Client, key string) error {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		io.Copy(io.Discard, out.Body)
		return out.Body.Close()
	}
	isDenied := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && ae.ErrorCode() == "AccessDenied"
	}

	// The base identity reads both prefixes: any narrowing below is the
	// session policy's doing.
	base := testenv.NewClient(env.Endpoint, env.ReaderAccessKey, env.ReaderSecretKey)
	if err := read(base, "a/0/0/0.png"); err != nil {
		t.Fatalf("reader on a/: %v", err)
	}
	if err := read(base, "b/0/0/0.png"); err != nil {
		t.Fatalf("reader on b/: %v", err)
	}

	for _, tc := range []struct{ own, other string }{{"a", "b"}, {"b", "a"}} {
		t.Run(tc.own, func(t *testing.T) {
			obj, err := o.Get(ctx, origin.Request{Tileset: tc.own, Bucket: bucket, Key: tc.own + "/0/0/0.png"})
			if err != nil {
				t.Fatalf("proxy read of own tile: %v", err)
			}
			body, _ := io.ReadAll(obj.Body)
			obj.Body.Close()
			if string(body) != "tile of "+tc.own {
				t.Fatalf("got %q", body)
			}
			// A crafted key under the other prefix, through the origin.
			_, err = o.Get(ctx, origin.Request{Tileset: tc.own, Bucket: bucket, Key: tc.other + "/0/0/0.png"})
			if !errors.Is(err, origin.ErrDenied) {
				t.Fatalf("origin read of %s/ with %s's credentials: got %v, want ErrDenied", tc.other, tc.own, err)
			}
			// And the raw credentials, used directly.
			c, err := o.Credentials(ctx, tc.own)
			if err != nil || c.SessionToken == "" || c.AccessKeyID == env.ReaderAccessKey {
				t.Fatalf("not assumed-role credentials: %v", err)
			}
			direct := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(env.Endpoint), UsePathStyle: true,
				Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)})
			if err := read(direct, tc.own+"/0/0/0.png"); err != nil {
				t.Errorf("assumed credentials on own prefix: %v", err)
			}
			if err := read(direct, tc.other+"/0/0/0.png"); !isDenied(err) {
				t.Errorf("assumed credentials of %s on %s/: got %v, want AccessDenied", tc.own, tc.other, err)
			}
			if _, err := direct.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(tc.own + "/x"), Body: strings.NewReader("x")}); !isDenied(err) {
				t.Errorf("assumed credentials may write: %v", err)
			}
		})
	}
	// One AssumeRole per tileset, however many reads.
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 {
		t.Errorf("AssumeRole calls: got %v, want one per tileset", calls)
	}
}

// TestArchiveSessionPolicyOnMinIO: an archive tileset's assumed
// credentials read its archive and nothing else, not even the object
// next to it.
func TestArchiveSessionPolicyOnMinIO(t *testing.T) {
	env := readerMinIO(t)
	bucket := env.Bucket(t)
	env.Put(t, bucket, map[string]testenv.Object{
		"maps/city.pmtiles":    {Body: []byte("the archive")},
		"maps/city.pmtiles.v2": {Body: []byte("next to it")},
		"maps/other.pmtiles":   {Body: []byte("another archive")},
	})
	cfg := roleConfig(t, env, config.Tileset{Name: "city", Bucket: bucket, Archive: "maps/city.pmtiles"})
	o, err := origin.New(t.Context(), cfg, origin.Deps{Credentials: credentials.NewStaticCredentialsProvider(env.ReaderAccessKey, env.ReaderSecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	obj, err := o.Get(ctx, origin.Request{Tileset: "city", Bucket: bucket, Key: "maps/city.pmtiles", Range: "bytes=0-2"})
	if err != nil {
		t.Fatalf("ranged read of the archive: %v", err)
	}
	b, _ := io.ReadAll(obj.Body)
	obj.Body.Close()
	if string(b) != "the" || obj.TotalSize != int64(len("the archive")) {
		t.Fatalf("ranged read: %q of %d", b, obj.TotalSize)
	}
	for _, key := range []string{"maps/city.pmtiles.v2", "maps/other.pmtiles"} {
		if _, err := o.Get(ctx, origin.Request{Tileset: "city", Bucket: bucket, Key: key}); !errors.Is(err, origin.ErrDenied) {
			t.Errorf("read of %s with the archive's credentials: %v, want ErrDenied", key, err)
		}
	}
	if _, err := o.Get(ctx, origin.Request{Tileset: "city", Bucket: bucket, Key: "maps/city.pmtiles", IfMatch: `"not-the-etag"`}); !errors.Is(err, origin.ErrChanged) {
		t.Errorf("If-Match with another ETag: %v, want ErrChanged", err)
	}
}

// readerMinIO is the shared MinIO with its read-only user required: the
// base identity the proxy assumes the role from.
func readerMinIO(t *testing.T) *testenv.S3 {
	t.Helper()
	env := testenv.MinIO(t)
	if env.ReaderAccessKey == "" {
		testenv.Require(t, "MinIO read-only user", "TILEPROXY_TEST_S3_READER_ACCESS_KEY is not set")
	}
	return env
}

// roleConfig is a validated config for tilesets read through MinIO's STS
// role on env.
func roleConfig(t *testing.T, env *testenv.S3, tilesets ...config.Tileset) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.S3.Endpoint, cfg.S3.UsePathStyle = env.Endpoint, true
	cfg.S3.RoleARN = "arn:minio:iam:::role/tileproxy"
	cfg.Tilesets = tilesets
	cfg.Auth.HMACSecret = strings.Repeat("s", 32)
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return &cfg
}
