// Package testenv gives integration tests a real MinIO: the shared one
// started by scripts/test.sh (through TILEPROXY_TEST_* variables), fresh
// buckets in it, and private MinIO processes a test may stop at will.
//
// A test that needs MinIO skips only when no endpoint is configured and CI
// is unset; under CI a missing MinIO fails the test.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 is a MinIO reachable with root (admin) credentials.
type S3 struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	// ReaderAccessKey/ReaderSecretKey are a non-root user that may only
	// GetObject (deploy/compose/init.sh), the proxy's base identity for STS.
	ReaderAccessKey string
	ReaderSecretKey string
	Client          *s3.Client
}

// Require fails (under CI) or skips the test when it cannot run.
func Require(t testing.TB, what, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required under CI but %s; run ./scripts/test.sh", what, why)
	}
	t.Skipf("%s: %s (run ./scripts/test.sh to start it)", what, why)
}

// MinIO returns the shared test MinIO.
func MinIO(t testing.TB) *S3 {
	t.Helper()
	ep := os.Getenv("TILEPROXY_TEST_S3_ENDPOINT")
	if ep == "" {
		Require(t, "MinIO", "TILEPROXY_TEST_S3_ENDPOINT is not set")
	}
	e := &S3{
		Endpoint:        ep,
		AccessKey:       os.Getenv("TILEPROXY_TEST_S3_ACCESS_KEY"),
		SecretKey:       os.Getenv("TILEPROXY_TEST_S3_SECRET_KEY"),
		ReaderAccessKey: os.Getenv("TILEPROXY_TEST_S3_READER_ACCESS_KEY"),
		ReaderSecretKey: os.Getenv("TILEPROXY_TEST_S3_READER_SECRET_KEY"),
	}
	e.Client = NewClient(ep, e.AccessKey, e.SecretKey)
	return e
}

// NewClient is a path-style S3 client for a MinIO endpoint.
func NewClient(endpoint, accessKey, secretKey string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(accessKey, secretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

var bucketSeq atomic.Int64

// Bucket creates a fresh bucket named after the test.
func (e *S3) Bucket(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := fmt.Sprintf("t-%d-%s-%s", bucketSeq.Add(1), hex.EncodeToString(b), sanitize(t.Name()))
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-.")
	}
	if _, err := e.Client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// Object is what Put uploads.
type Object struct {
	Body            []byte
	ContentType     string
	ContentEncoding string
}

// Put uploads objects (key -> object) into bucket.
func (e *S3) Put(t testing.TB, bucket string, objs map[string]Object) {
	t.Helper()
	for key, o := range objs {
		in := &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(o.Body)}
		if o.ContentType != "" {
			in.ContentType = aws.String(o.ContentType)
		}
		if o.ContentEncoding != "" {
			in.ContentEncoding = aws.String(o.ContentEncoding)
		}
		if _, err := e.Client.PutObject(context.Background(), in); err != nil {
			t.Fatalf("put %s/%s: %v", bucket, key, err)
		}
	}
}

// Process is a private MinIO that a test may stop and restart, for
// proving what happens when the origin goes away.
type Process struct {
	Endpoint  string
	AccessKey string
	SecretKey string
	dir       string
	addr      string
	cmd       *exec.Cmd
}

// StartMinIO starts a private MinIO on a free loopback port and stops it
// when the test ends.
func StartMinIO(t testing.TB) *Process {
	t.Helper()
	bin := os.Getenv("TILEPROXY_TEST_MINIO_BIN")
	if bin == "" {
		Require(t, "MinIO binary", "TILEPROXY_TEST_MINIO_BIN is not set")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &Process{
		Endpoint:  "http://" + addr,
		AccessKey: "privateadmin",
		SecretKey: "privateadmin-secret-" + hex.EncodeToString([]byte(t.Name()))[:8],
		dir:       t.TempDir(),
		addr:      addr,
	}
	t.Cleanup(p.Stop)
	p.Start(t)
	return p
}

// Start (re)starts the process on its original address and waits until ready.
func (p *Process) Start(t testing.TB) {
	t.Helper()
	bin := os.Getenv("TILEPROXY_TEST_MINIO_BIN")
	console, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	consoleAddr := console.Addr().String()
	console.Close()
	p.cmd = exec.Command(bin, "server", "--quiet", "--address", p.addr, "--console-address", consoleAddr, p.dir)
	p.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+p.AccessKey, "MINIO_ROOT_PASSWORD="+p.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off",
		// Tests count the GETs MinIO served from its own metrics.
		"MINIO_PROMETHEUS_AUTH_TYPE=public")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start minio: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.Endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("private minio at %s not ready after 30s", p.Endpoint)
}

// Stop kills the process; the data directory stays for a restart.
func (p *Process) Stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

// S3 returns a handle on the private process with admin credentials.
func (p *Process) S3() *S3 {
	return &S3{Endpoint: p.Endpoint, AccessKey: p.AccessKey, SecretKey: p.SecretKey,
		Client: NewClient(p.Endpoint, p.AccessKey, p.SecretKey)}
}
