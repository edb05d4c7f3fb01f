package origin_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/tileproxy/tileproxy/config"
	"github.com/tileproxy/tileproxy/internal/testkit/testenv"
	"github.com/tileproxy/tileproxy/origin"
)

func newOrigin(t *testing.T, endpoint, bucket, ak, sk string, timeout time.Duration) *origin.S3 {
	t.Helper()
	cfg := config.Default()
	cfg.S3.Endpoint = endpoint
	cfg.S3.UsePathStyle = true
	cfg.S3.Timeout = config.Duration(timeout)
	cfg.Tilesets = []config.Tileset{{Name: "a", Bucket: bucket, Prefix: "a/"}}
	cfg.ApplyDefaults()
	o, err := origin.New(t.Context(), &cfg, origin.Deps{Credentials: credentials.NewStaticCredentialsProvider(ak, sk, "")})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestS3AgainstMinIO(t *testing.T) {
	env := testenv.MinIO(t)
	bucket := env.Bucket(t)
	body := []byte(strings.Repeat("tile-bytes-", 100))
	env.Put(t, bucket, map[string]testenv.Object{
		"a/0/0/0.png": {Body: body, ContentType: "image/png"},
		"a/0/0/0.pbf": {Body: []byte("gz"), ContentType: "application/x-protobuf", ContentEncoding: "gzip"},
	})
	o := newOrigin(t, env.Endpoint, bucket, env.AccessKey, env.SecretKey, 10*time.Second)
	ctx := t.Context()
	get := func(req origin.Request) (*origin.Object, []byte, error) {
		req.Tileset, req.Bucket = "a", bucket
		obj, err := o.Get(ctx, req)
		if err != nil {
			return nil, nil, err
		}
		var b []byte
		if obj.Body != nil {
			b, err = io.ReadAll(obj.Body)
			obj.Body.Close()
		}
		return obj, b, err
	}

	obj, got, err := get(origin.Request{Key: "a/0/0/0.png"})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(body) || obj.Size != int64(len(body)) || obj.ContentType != "image/png" || obj.ETag == "" || obj.LastModified.IsZero() {
		t.Fatalf("GetObject: %+v (%d bytes)", obj, len(got))
	}
	etag := obj.ETag

	if obj, _, err := get(origin.Request{Key: "a/0/0/0.pbf"}); err != nil || obj.ContentEncoding != "gzip" {
		t.Errorf("Content-Encoding: %+v %v", obj, err)
	}
	if obj, b, err := get(origin.Request{Key: "a/0/0/0.png", HeadOnly: true}); err != nil || obj.Body != nil || len(b) != 0 || obj.Size != int64(len(body)) || obj.ETag != etag {
		t.Errorf("HeadObject: %+v %v", obj, err)
	}
	if obj, b, err := get(origin.Request{Key: "a/0/0/0.png", Range: "bytes=0-9"}); err != nil || string(b) != "tile-bytes" || obj.ContentRange != "bytes 0-9/1100" || obj.TotalSize != 1100 {
		t.Errorf("Range: %+v %q %v", obj, b, err)
	}

	for _, tc := range []struct {
		name string
		req  origin.Request
		want error
	}{
		{"missing key", origin.Request{Key: "a/9/9/9.png"}, origin.ErrNotFound},
		{"missing key HEAD", origin.Request{Key: "a/9/9/9.png", HeadOnly: true}, origin.ErrNotFound},
		{"if-none-match", origin.Request{Key: "a/0/0/0.png", IfNoneMatch: etag}, origin.ErrNotModified},
		{"if-modified-since", origin.Request{Key: "a/0/0/0.png", IfModifiedSince: time.Now().Add(time.Hour)}, origin.ErrNotModified},
		{"range outside", origin.Request{Key: "a/0/0/0.png", Range: "bytes=5000-"}, origin.ErrRangeNotSatisfiable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := get(tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("missing bucket is a gateway error", func(t *testing.T) {
		_, err := o.Get(ctx, origin.Request{Tileset: "a", Bucket: "no-such-bucket-tp", Key: "a/0/0/0.png"})
		var oe *origin.Error
		if !errors.Is(err, origin.ErrDenied) || !errors.As(err, &oe) || oe.Code != "NoSuchBucket" {
			t.Fatalf("got %v, want ErrDenied with code NoSuchBucket", err)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		bad := newOrigin(t, env.Endpoint, bucket, env.AccessKey, "wrong-secret-key", 10*time.Second)
		_, err := bad.Get(ctx, origin.Request{Tileset: "a", Bucket: bucket, Key: "a/0/0/0.png"})
		var oe *origin.Error
		if !errors.Is(err, origin.ErrDenied) || !errors.As(err, &oe) || oe.RequestID == "" {
			t.Fatalf("got %v, want ErrDenied with a request ID", err)
		}
	})
	t.Run("caller cancels", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := o.Get(cctx, origin.Request{Tileset: "a", Bucket: bucket, Key: "a/0/0/0.png"})
		if !errors.Is(err, context.Canceled) || errors.Is(err, origin.ErrUnavailable) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

func TestS3Timeout(t *testing.T) {
	// A listener that accepts and never answers: the origin must give up
	// after its timeout with ErrTimeout, not hang with the client.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A Get that ignored its timeout would hang here until the test binary's
	// own timeout fails it; no wall-clock bound is asserted.
	o := newOrigin(t, "http://"+ln.Addr().String(), "tiles", "k", "s", 300*time.Millisecond)
	_, err = o.Get(t.Context(), origin.Request{Tileset: "a", Bucket: "tiles", Key: "a/0/0/0.png"})
	if !errors.Is(err, origin.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
}

func TestS3Unreachable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	o := newOrigin(t, "http://"+addr, "tiles", "k", "s", 5*time.Second)
	_, err := o.Get(t.Context(), origin.Request{Tileset: "a", Bucket: "tiles", Key: "a/0/0/0.png"})
	if !errors.Is(err, origin.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

func TestSessionPolicy(t *testing.T) {
	got := origin.SessionPolicy("tiles", "city/*")
	for _, want := range []string{`"s3:GetObject"`, `"arn:aws:s3:::tiles/city/*"`, `"Effect":"Allow"`} {
		if !strings.Contains(got, want) {
			t.Errorf("policy lacks %s: %s", want, got)
		}
	}
	if strings.Contains(got, "ListBucket") || strings.Contains(got, "PutObject") {
		t.Errorf("policy grants more than GetObject: %s", got)
	}
}
